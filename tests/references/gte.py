"""GTE's improved contrastive loss as sentence-transformers computes it (``MultipleNegativesBidirectionalRankingLoss``,
pairs only, one process): the four similarity blocks, self-pairs removed, one log-sum-exp per query."""

from __future__ import annotations

import torch


def gte_loss(queries, docs, *, temperature):
    scale, n = 1.0 / temperature, queries.shape[0]
    rows = torch.arange(n)
    sim_qd = queries @ docs.T * scale
    sim_qq = queries @ queries.T * scale
    sim_dq = (queries @ docs.T * scale).T
    sim_dd = (docs @ docs.T * scale).T
    sim_qq[rows, rows] = -torch.inf
    sim_dd = sim_dd.masked_fill(torch.eye(n, dtype=torch.bool), -torch.inf)
    log_z = torch.logsumexp(torch.cat([sim_qd, sim_qq, sim_dq, sim_dd], dim=1), dim=1)
    return -(sim_qd[rows, rows] - log_z).mean()
