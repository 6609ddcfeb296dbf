"""Wang et al. (AMCL), ECCV 2024: the authors' AMCLNTXentLoss (github.com/LeiWangR/cl, amcl/losses.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def amcl_authors(z1, z2, phi, beta, tau_min, tau_max, topk, dim):
    def to_tau(score):
        return tau_min + (tau_max - tau_min) * torch.sigmoid(-score.float())

    def omega(tau):
        return 0.5 * float(dim) * torch.log(tau) + torch.reciprocal(tau)

    def direction(anchor, positive, negatives):
        anchor, positive = F.normalize(anchor.float(), dim=-1), F.normalize(positive.float(), dim=-1)
        negatives = F.normalize(negatives.float(), dim=-1)
        pos_sim = (anchor * positive).sum(-1)
        tau_pos = to_tau((phi(anchor) * phi(positive)).sum(-1))
        sim_neg = (anchor[:, None, :] * negatives).sum(-1)
        pn = phi(negatives.reshape(-1, negatives.size(-1))).reshape(negatives.size(0), negatives.size(1), -1)
        tau_neg = to_tau(torch.einsum("bd,bnd->bn", phi(anchor), pn))
        k = min(topk, negatives.size(1))
        vals, idx = sim_neg.topk(k=k, dim=1, largest=True, sorted=False)
        tau_top = tau_neg.gather(1, idx)
        neg = (vals / tau_top).mean(dim=1)
        reg_pos = beta * omega(tau_pos)
        reg_neg = beta * (torch.log(tau_top).sum(dim=1) + torch.reciprocal(tau_top).sum(dim=1))
        return (-pos_sim / tau_pos + neg + reg_pos - reg_neg).mean()

    b, c, d = z1.shape
    eye = torch.eye(b, dtype=torch.bool)
    losses = []
    for h in range(c):
        a, p = z1[:, h], z2[:, h]
        same_view_other = z1[:, h].unsqueeze(0).expand(b, -1, -1)[~eye].view(b, b - 1, d)
        other_view_other = z2[:, h].unsqueeze(0).expand(b, -1, -1)[~eye].view(b, b - 1, d)
        losses.append(direction(a, p, torch.cat([same_view_other, other_view_other], dim=1)))
        losses.append(direction(p, a, torch.cat([other_view_other, same_view_other], dim=1)))
    return torch.stack(losses).view(c, 2).mean(dim=1).sum()
