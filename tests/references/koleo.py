"""Sablayrolles et al. (KoLeo), ICLR 2019, as DINOv2 computes it (github.com/facebookresearch/dinov2,
dinov2/loss/koleo_loss.py, ``KoLeoLoss``), on one process without autocast."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class KoLeoLoss(nn.Module):
    """Kozachenko-Leonenko entropic loss regularizer from Sablayrolles et al. - 2018 - Spreading vectors for
    similarity search (DINOv2's code; ``torch.cuda.amp.autocast(enabled=False)`` dropped: CPU, float64)."""

    def __init__(self):
        super().__init__()
        self.pdist = nn.PairwiseDistance(2, eps=1e-8)

    def pairwise_NNs_inner(self, x):
        # pairwise dot products (= inverse distance)
        dots = torch.mm(x, x.t())
        n = x.shape[0]
        dots.view(-1)[:: (n + 1)].fill_(-1)  # Trick to fill diagonal with -1
        # max inner prod -> min distance
        _, I = torch.max(dots, dim=1)  # noqa: E741
        return I

    def forward(self, student_output, eps=1e-8):
        student_output = F.normalize(student_output, eps=eps, p=2, dim=-1)
        I = self.pairwise_NNs_inner(student_output)  # noqa: E741
        distances = self.pdist(student_output, student_output[I])  # BxD, BxD -> B
        loss = -torch.log(distances + eps).mean()
        return loss


def koleo_reference(z, eps=1e-8):
    return KoLeoLoss()(z, eps=eps)
