"""Lee et al. (i-Mix), ICLR 2021: the authors' MoCo-based snippet, with the batch's other view as candidates."""

from __future__ import annotations

import torch


def i_mix_authors(a, b, index, lam, temperature):
    criterion = torch.nn.CrossEntropyLoss(reduction="none")
    logits = a @ b.T / temperature
    return (lam * criterion(logits, torch.arange(a.shape[0])) + (1.0 - lam) * criterion(logits, index)).mean()
