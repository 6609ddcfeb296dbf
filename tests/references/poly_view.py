"""Shidani et al. (poly-view), ICLR 2024: the PVCLoss of github.com/pakoromilas/Multi-View-CL (geometric)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pvc_geometric_reference(z, multiplier, tau):
    z = F.normalize(z, p=2, dim=1)
    k = z.shape[0] // multiplier
    views = torch.stack([z[i * k : (i + 1) * k] for i in range(multiplier)], dim=1)
    scores = torch.einsum("jmd,knd->jmnk", views, views) / tau
    losses_alpha = []
    for alpha in range(multiplier):
        losses_alpha_beta = []
        for beta in range(multiplier):
            if alpha != beta:
                logits = scores[:, alpha]
                labels = torch.arange(k) + beta * k
                mask_sample = torch.eye(k, dtype=z.dtype)[:, None, :]
                mask_beta = torch.ones(multiplier, dtype=z.dtype)[None, :, None].clone()
                mask_beta[:, beta] = 0
                logits = logits - mask_beta * mask_sample * 1e9
                logits = logits.reshape(k, multiplier * k)
                losses_alpha_beta.append(F.cross_entropy(logits, labels))
        losses_alpha.append(torch.mean(torch.stack(losses_alpha_beta, dim=-1), dim=-1))
    return torch.mean(torch.stack(losses_alpha, dim=-1))
