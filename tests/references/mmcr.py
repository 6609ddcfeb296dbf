"""Yerxa et al. (MMCR), NeurIPS 2023: the loss of the authors' code (github.com/ThomasYerxa/mmcr,
mmcr/cifar_stl/loss_mmcr.py, ``MMCR_Loss.forward``), on one process; ``einops.rearrange`` written out."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def mmcr_reference(z, lmbda, n_aug):
    """``z``: ``(B * n_aug, C)``, the ``n_aug`` views of each sample adjacent, as the authors' data loader stacks
    them (``"(B N) C -> B C N"``)."""
    z = F.normalize(z, dim=-1)
    z_local = z.reshape(-1, n_aug, z.shape[-1]).transpose(1, 2)  # einops.rearrange(z, "(B N) C -> B C N")

    centroids = torch.mean(z_local, dim=-1)
    if lmbda != 0.0:
        local_nuc = torch.linalg.svdvals(z_local).sum()
    else:
        local_nuc = torch.tensor(0.0)
    global_nuc = torch.linalg.svdvals(centroids).sum()

    batch_size = z_local.shape[0]
    loss = lmbda * local_nuc / batch_size - global_nuc
    return loss
