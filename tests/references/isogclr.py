"""Qiu et al. (iSogCLR), ICML 2023: the authors' iSogCLR_Loss (image-text), ported to the CPU line by line."""

from __future__ import annotations

import torch


class AuthorsISogCLR:
    """The authors' iSogCLR_Loss.forward for one process, .cuda() removed, state in float64."""

    def __init__(self, N, gamma=0.8, tau_init=0.01, rho=8.0):
        self.s_I, self.s_T = torch.zeros(N, dtype=torch.float64), torch.zeros(N, dtype=torch.float64)
        self.b_I, self.b_T = torch.zeros(N, dtype=torch.float64), torch.zeros(N, dtype=torch.float64)
        self.gamma, self.eps, self.rho = gamma, 1e-14, rho
        self.tau_min, self.tau_max = 0.005, 0.05
        self.eta_init, self.beta_u, self.grad_clip = 0.03, 0.5, 5.0
        self.tau_I = torch.ones(N, dtype=torch.float64) * tau_init
        self.tau_T = torch.ones(N, dtype=torch.float64) * tau_init
        self.u_I, self.u_T = torch.zeros(N, dtype=torch.float64), torch.zeros(N, dtype=torch.float64)

    def forward(self, image_features, text_features, image_ids, text_ids, epoch):
        sim = torch.einsum("i d, j d -> i j", image_features, text_features)
        diag_sim = torch.diagonal(sim)
        batch_size = sim.shape[0]
        mask_neg = 1.0 - torch.eye(batch_size, dtype=sim.dtype)
        tau_image, tau_text = self.tau_I[image_ids], self.tau_T[text_ids]
        image_diffs = sim - diag_sim[:, None]
        text_diffs = sim - diag_sim[None, :]
        image_diffs_d_temps = (image_diffs / tau_image[:, None]).detach()
        text_diffs_d_temps = (text_diffs / tau_text[None, :]).detach()
        old_b_I = self.b_I[image_ids]
        new_b_I = torch.max(image_diffs_d_temps, old_b_I[:, None].tile(1, batch_size))
        self.b_I[image_ids] = torch.max(new_b_I, dim=1)[0]
        old_b_T = self.b_T[text_ids]
        new_b_T = torch.max(text_diffs_d_temps, old_b_T[None, :].tile(batch_size, 1))
        self.b_T[text_ids] = torch.max(new_b_T, dim=0)[0]
        exp_image_diffs = torch.exp(image_diffs_d_temps - self.b_I[image_ids][:, None]) * mask_neg
        exp_text_diffs = torch.exp(text_diffs_d_temps - self.b_T[text_ids][None, :]) * mask_neg
        g_I = torch.sum(exp_image_diffs, dim=1, keepdim=True)
        g_T = torch.sum(exp_text_diffs, dim=0, keepdim=True)
        if epoch == 0:
            s_I, s_T = g_I, g_T
        else:
            s_I = (1.0 - self.gamma) * self.s_I[image_ids] * torch.exp(
                old_b_I - self.b_I[image_ids]
            ) + self.gamma * g_I.squeeze()
            s_T = (1.0 - self.gamma) * self.s_T[text_ids] * torch.exp(
                old_b_T - self.b_T[text_ids]
            ) + self.gamma * g_T.squeeze()
            s_I, s_T = s_I.reshape(g_I.shape), s_T.reshape(g_T.shape)
        self.s_I[image_ids] = s_I.squeeze()
        self.s_T[text_ids] = s_T.squeeze()
        s_I, s_T = s_I.clamp(min=self.eps), s_T.clamp(min=self.eps)
        weights_image = exp_image_diffs / s_I
        weights_text = exp_text_diffs / s_T
        image_loss = torch.sum(weights_image * image_diffs, dim=1, keepdim=True)
        text_loss = torch.sum(weights_text * text_diffs, dim=0, keepdim=True)
        total_loss = image_loss.mean() + text_loss.mean()
        temp_weight_image = (
            torch.log(s_I / (batch_size - 1))
            + self.b_I[image_ids][:, None]
            + self.rho
            - torch.sum(weights_image * image_diffs_d_temps, dim=1, keepdim=True)
        )
        temp_weight_text = (
            torch.log(s_T / (batch_size - 1))
            + self.b_T[text_ids][None, :]
            + self.rho
            - torch.sum(weights_text * text_diffs_d_temps, dim=0, keepdim=True)
        )
        self.u_I[image_ids] = (1.0 - self.beta_u) * self.u_I[
            image_ids
        ] + self.beta_u * temp_weight_image.squeeze().clamp_(min=-self.grad_clip, max=self.grad_clip)
        self.u_T[text_ids] = (1.0 - self.beta_u) * self.u_T[text_ids] + self.beta_u * temp_weight_text.squeeze().clamp_(
            min=-self.grad_clip, max=self.grad_clip
        )
        self.tau_I[image_ids] = (tau_image - self.eta_init * self.u_I[image_ids]).clamp_(
            min=self.tau_min, max=self.tau_max
        )
        self.tau_T[text_ids] = (tau_text - self.eta_init * self.u_T[text_ids]).clamp_(
            min=self.tau_min, max=self.tau_max
        )
        return total_loss
