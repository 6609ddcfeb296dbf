"""Zhang et al. (GOR), ICCV 2017: ``global_orthogonal_regularization`` of the HardNet code
(github.com/DagnyT/hardnet, code/Losses.py), which trains with it as the paper describes."""

from __future__ import annotations

import torch


def global_orthogonal_regularization(anchor, negative):
    neg_dis = torch.sum(torch.mul(anchor, negative), 1)
    dim = anchor.size(1)
    gor = torch.pow(torch.mean(neg_dis), 2) + torch.clamp(torch.mean(torch.pow(neg_dis, 2)) - 1.0 / dim, min=0.0)

    return gor
