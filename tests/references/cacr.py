"""Zheng et al. (CACR), TMLR 2023: the authors' code (github.com/JegZheng/CACR-SSL, Euclidean cost), on the CPU."""

from __future__ import annotations

import numpy as np
import torch


def cacr_loss1(latent_codes_list, alpha=1.0, tau_pos=1.0):
    loss1 = 0.0
    for x in range(len(latent_codes_list)):
        z_x = latent_codes_list[x]
        mask = list(range(len(latent_codes_list)))
        mask.pop(x)
        masked_z_x = torch.stack(latent_codes_list, dim=0)[mask]
        cost = (z_x - masked_z_x).norm(p=2, dim=-1).pow(2).transpose(1, 0).mul(alpha)
        dist = cost.mul(tau_pos / alpha)
        weights = torch.softmax(dist, dim=1)
        loss1 += (cost * weights).sum(1).mean()
    return loss1 / (len(latent_codes_list))


def cacr_negative(z_x, z_y, beta=1.0, tau_neg=1.0):
    cost = torch.norm(z_x[:, None] - z_y, dim=-1).pow(2).mul(-beta)
    cost = cost.masked_select(~torch.from_numpy(np.eye(cost.shape[0], dtype=bool))).view(
        cost.shape[0], cost.shape[0] - 1
    )
    dist = cost.mul(tau_neg / beta)
    weights = torch.softmax(dist, dim=1)
    return (cost * weights).sum(1).mean()


def cacr_loss2(latent_codes_list, beta=1.0, tau_neg=1.0):
    loss2, counter = 0.0, 0
    for x in range(len(latent_codes_list)):
        for y in range(x + 1, len(latent_codes_list)):
            loss2 += cacr_negative(latent_codes_list[x], latent_codes_list[y], beta=beta, tau_neg=tau_neg)
            counter += 1
    return loss2 / counter
