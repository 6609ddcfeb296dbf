"""SogCLR's loss as the authors' code computes it (Optimization-AI/SogCLR, ``dynamic_contrastive_loss``).

The structure of their two-view loss, written out with explicit state: logits of each anchor against the other
view and its own view (B x 2B), self-pairs masked with a large number, ``u1``/``u2`` the two directions' moving
averages of the mean negative exponential, weights ``exp(logits / T) / u`` held constant, and the loss
``-(logit of the positive - mean over negatives of weight * logit)`` summed over the two directions. The authors'
code stores ``u1 + u2`` as the new state; ``combine`` lets a test choose that or the mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sogclr_step(h1, h2, u, index, *, temperature, gamma, combine="sum"):
    """One call: returns ``(loss, new_u)`` for the batch ``index`` (``u`` is not modified)."""
    b = h1.shape[0]
    labels = F.one_hot(torch.arange(b), 2 * b).to(h1.dtype)
    masks = F.one_hot(torch.arange(b), b).to(h1.dtype)
    large = 1e9
    logits_aa = h1 @ h1.T - masks * large
    logits_bb = h2 @ h2.T - masks * large
    logits_ab, logits_ba = h1 @ h2.T, h2 @ h1.T
    neg_mask = 1 - labels
    logits_ab_aa = torch.cat([logits_ab, logits_aa], 1)
    logits_ba_bb = torch.cat([logits_ba, logits_bb], 1)
    neg_logits1 = torch.exp(logits_ab_aa / temperature) * neg_mask
    neg_logits2 = torch.exp(logits_ba_bb / temperature) * neg_mask
    u1 = (1 - gamma) * u[index] + gamma * neg_logits1.sum(1) / (2 * (b - 1))
    u2 = (1 - gamma) * u[index] + gamma * neg_logits2.sum(1) / (2 * (b - 1))
    new_u = u.clone()
    new_u[index] = (u1 + u2).detach() if combine == "sum" else ((u1 + u2) / 2).detach()
    w1, w2 = (neg_logits1 / u1[:, None]).detach(), (neg_logits2 / u2[:, None]).detach()

    def cross_entropy(logits, weights):
        expsum = (weights * logits).sum(1, keepdim=True) / (2 * (b - 1))
        return -(labels * (logits - expsum)).sum(1)

    # the masked self-pairs carry weight 0, so their -1e9 logits do not enter
    return (cross_entropy(logits_ab_aa, w1) + cross_entropy(logits_ba_bb, w2)).mean(), new_u
