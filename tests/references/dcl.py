"""Yeh et al. (DCL, DCLW), ECCV 2022: the decoupled contrastive loss of the paper's reference code."""

from __future__ import annotations

import math

import torch

SMALL_NUM = math.log(1e-45)


def yeh_dcl(z1, z2, temperature, weight_fn=None):
    # the DCL reference code (one direction); the paper's training sums both directions
    cross_view_distance = torch.mm(z1, z2.t())
    positive_loss = -torch.diag(cross_view_distance) / temperature
    if weight_fn is not None:
        positive_loss = positive_loss * weight_fn(z1, z2)
    neg_similarity = torch.cat((torch.mm(z1, z1.t()), cross_view_distance), dim=1) / temperature
    neg_mask = torch.eye(z1.size(0), dtype=z1.dtype).repeat(1, 2)
    negative_loss = torch.logsumexp(neg_similarity + neg_mask * SMALL_NUM, dim=1, keepdim=False)
    return (positive_loss + negative_loss).mean()


def yeh_dclw_weight(sigma):
    return lambda z1, z2: 2 - z1.size(0) * torch.nn.functional.softmax((z1 * z2).sum(dim=1) / sigma, dim=0).squeeze()
