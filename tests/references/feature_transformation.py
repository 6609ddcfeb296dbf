"""Zhu et al. (feature transformation), ICCV 2021: the authors' RGBMoCo_dropmix_norm (mix_target='posneg')."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def ft_authors(q, k, queue, pos_mask, neg_mask, indices, T, postmix_norm=False):
    k = k.detach()
    queue = queue.clone().detach()
    q_mix = pos_mask * q + (1 - pos_mask) * k
    k_mix = pos_mask * k + (1 - pos_mask) * q
    q, k = q_mix, k_mix
    queue = neg_mask * queue + (1 - neg_mask) * queue[indices]
    if postmix_norm:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    bsz = q.shape[0]
    pos = torch.bmm(q.view(bsz, 1, -1), k.view(bsz, -1, 1)).view(bsz, 1)
    neg = torch.mm(queue, q.transpose(1, 0)).transpose(0, 1)
    out = torch.div(torch.cat((pos, neg), dim=1), T).squeeze().contiguous()
    return F.cross_entropy(out, torch.zeros(bsz, dtype=torch.long))
