"""Dufumier et al. (KCL), ICML 2023: the authors' DecoupledUniformityLoss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kcl_authors(z, prior, kernel, sigma, lambda_, t):
    # z: (bsize, nviews, dim) as in the authors' code
    z = F.normalize(z, p=2, dim=-1)
    bs = z.shape[0]
    z = torch.mean(z, dim=1)
    if prior is not None:
        if len(prior.shape) == 1:
            prior = prior.unsqueeze(1).double()
        if kernel == "rbf":
            sim = torch.exp(-torch.cdist(prior, prior).pow(2) / (2 * sigma**2))
        else:
            unit = F.normalize(prior, dim=1)
            sim = unit @ unit.T
        alpha = torch.inverse(sim + lambda_ * torch.eye(bs, dtype=torch.float64)) @ sim
        z = alpha.detach() @ z
    return torch.pdist(z, p=2).pow(2).mul(-t).exp().mean().log()
