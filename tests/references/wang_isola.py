"""Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity on the
Hypersphere", ICML 2020: the paper's reference code (Figure 5) and the uniformity of its ImageNet (MoCo) code."""

from __future__ import annotations

import torch


# --- the paper's reference code (Figure 5), verbatim ---------------------------------------------------------------
def ref_align(x, y, alpha=2):
    return (x - y).norm(p=2, dim=1).pow(alpha).mean()


def ref_uniform(x, t=2):
    return torch.pdist(x, p=2).pow(2).mul(-t).exp().mean().log()


# --- the MoCo variant, from the paper's ImageNet code (queue stored as (D, K) there) ------------------------------
def ref_moco_uniform(q, queue_dk, t, intra_batch):
    sq_dists = (2 - 2 * (q @ queue_dk.clone().detach())).flatten()
    if intra_batch:
        sq_dists = torch.cat([sq_dists, torch.pdist(q, p=2).pow(2)])
    return sq_dists.mul(-t).exp().mean().log()
