"""Robinson et al.'s HCL code (github.com/joshr17/HCL, image/main.py), with Chuang et al.'s debiased estimator."""

from __future__ import annotations

import numpy as np
import torch


def get_negative_mask(batch_size):
    negative_mask = torch.ones((batch_size, 2 * batch_size), dtype=bool)
    for i in range(batch_size):
        negative_mask[i, i] = 0
        negative_mask[i, i + batch_size] = 0
    return torch.cat((negative_mask, negative_mask), 0)


def hcl_reference(out_1, out_2, tau_plus, batch_size, beta, estimator, temperature):
    out = torch.cat([out_1, out_2], dim=0)
    neg = torch.exp(torch.mm(out, out.t().contiguous()) / temperature)
    mask = get_negative_mask(batch_size)
    neg = neg.masked_select(mask).view(2 * batch_size, -1)
    pos = torch.exp(torch.sum(out_1 * out_2, dim=-1) / temperature)
    pos = torch.cat([pos, pos], dim=0)
    if estimator == "hard":
        N = batch_size * 2 - 2
        imp = (beta * neg.log()).exp()
        reweight_neg = (imp * neg).sum(dim=-1) / imp.mean(dim=-1)
        Ng = (-tau_plus * N * pos + reweight_neg) / (1 - tau_plus)
        Ng = torch.clamp(Ng, min=N * np.e ** (-1 / temperature))
    elif estimator == "debiased":  # Chuang et al.'s code: the same with imp = 1
        N = batch_size * 2 - 2
        Ng = (-tau_plus * N * pos + neg.sum(dim=-1)) / (1 - tau_plus)
        Ng = torch.clamp(Ng, min=N * np.e ** (-1 / temperature))
    else:
        Ng = neg.sum(dim=-1)
    return (-torch.log(pos / (pos + Ng))).mean()
