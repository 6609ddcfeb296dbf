"""Huang et al. (MACL), ICML 2023: the authors' code (github.com/chenhaoxing/MACL, macl.py)."""

from __future__ import annotations

import torch


def macl_authors(fx, gx, tau_init, coefficient, variant):
    logits = fx @ gx.T
    A = (torch.trace(logits) / fx.shape[0]).detach()
    tau = tau_init * coefficient**A if variant == "a" else tau_init * (1 + coefficient * A)
    P = torch.softmax(logits / tau, dim=1)
    mask = torch.ones(P.shape, dtype=torch.float64).fill_diagonal_(0).bool()
    W0 = (P.masked_select(mask)).view(P.shape[0], -1).sum(-1)
    W = torch.ones(fx.shape[0], dtype=torch.float64) / W0
    return (-W.detach() * torch.log(P).diag()).mean()
