"""Caron et al. (SwAV), NeurIPS 2020: distributed_sinkhorn of the authors' code (github.com/facebookresearch/swav)."""

from __future__ import annotations

import torch


def swav_sinkhorn_reference(out, epsilon, iterations):
    # SwAV's distributed_sinkhorn on one process
    Q = torch.exp(out / epsilon).t()
    B, K = Q.shape[1], Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(iterations):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()
