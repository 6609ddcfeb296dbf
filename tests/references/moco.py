"""He et al. (MoCo), CVPR 2020: the loss of Algorithm 1 / main_moco.py."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def moco_reference(q, k, queue_dk, tau):
    # MoCo's Algorithm 1 / main_moco.py: logits [l_pos, l_neg], cross-entropy with label 0
    l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", [q, queue_dk.clone().detach()])
    logits = torch.cat([l_pos, l_neg], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))
