"""Loops from the equations: each InfoNCE-family loss with false negatives eliminated by sample id.

For anchor ``i`` the denominator holds its positive and every candidate whose sample id differs from ``ids[i]``
(Huynh et al., WACV 2022, "elimination"); written one anchor at a time, with no engine, mask or tile, so that it
is independent of the library's vectorised code. LLaVE's hardness weighting (Lan et al. 2025, Eq. 5) raises each
negative's logit by ``alpha * sg(<a_i, b_j>)``.
"""

from __future__ import annotations

import math

import torch


def _ce(positive, negatives):
    """``-log(e^p / (e^p + sum e^n))`` for one anchor."""
    return torch.logsumexp(torch.stack([positive, *negatives]), 0) - positive


def info_nce(a, b, ids, *, temperature, hardness=0.0):
    n = a.shape[0]
    terms = []
    for i in range(n):
        negatives = [
            a[i] @ b[j] / temperature + hardness * (a[i] @ b[j]).detach() for j in range(n) if ids[j] != ids[i]
        ]
        terms.append(_ce(a[i] @ b[i] / temperature, negatives))
    return torch.stack(terms).mean()


def clip(a, b, ids, *, logit_scale, hardness=0.0):
    return (info_nce(a, b, ids, temperature=1 / logit_scale, hardness=hardness)
            + info_nce(b, a, ids, temperature=1 / logit_scale, hardness=hardness)) / 2  # fmt: skip


def nt_xent(a, b, ids, *, temperature):
    z, both, n = torch.cat([a, b]), torch.cat([ids, ids]), a.shape[0]
    terms = []
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        negatives = [z[i] @ z[k] / temperature for k in range(2 * n) if both[k] != both[i]]
        terms.append(_ce(z[i] @ z[partner] / temperature, negatives))
    return torch.stack(terms).mean()


def dcl(a, b, ids, *, temperature, weight=None):
    def direction(x, y):
        terms = []
        for i in range(x.shape[0]):
            negatives = [x[i] @ x[k] / temperature for k in range(x.shape[0]) if ids[k] != ids[i]]
            negatives += [x[i] @ y[k] / temperature for k in range(x.shape[0]) if ids[k] != ids[i]]
            w = 1.0 if weight is None else weight[i]
            terms.append(-w * (x[i] @ y[i]) / temperature + torch.logsumexp(torch.stack(negatives), 0))
        return torch.stack(terms).mean()

    return (direction(a, b) + direction(b, a)) / 2


def hard_negative(a, b, ids, *, temperature, tau_plus, beta):
    """Robinson et al.'s estimator with each anchor's negatives the views of other ids (M of them)."""
    z, both, n = torch.cat([a, b]), torch.cat([ids, ids]), a.shape[0]
    terms = []
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        s = torch.stack([z[i] @ z[k] / temperature for k in range(2 * n) if both[k] != both[i]])
        m = s.shape[0]
        pos = torch.exp(z[i] @ z[partner] / temperature)
        imp = torch.exp(beta * s)
        reweighted = m * (imp * torch.exp(s)).sum() / imp.sum()
        ng = torch.clamp((reweighted - tau_plus * m * pos) / (1 - tau_plus), min=m * math.exp(-1 / temperature))
        terms.append(-torch.log(pos / (pos + ng)))
    return torch.stack(terms).mean()


def gte(q, d, ids, *, temperature):
    n, s = q.shape[0], lambda x, y: x @ y / temperature
    terms = []
    for i in range(n):
        others = [j for j in range(n) if ids[j] != ids[i]]
        negatives = [s(q[i], d[j]) for j in others] + [s(q[i], q[j]) for j in others]
        negatives += [s(d[i], q[j]) for j in others] + [s(d[i], d[j]) for j in others]
        negatives.append(s(d[i], q[i]))  # the positive from the document's side
        terms.append(_ce(s(q[i], d[i]), negatives))
    return torch.stack(terms).mean()


def hn_nce(a, b, ids, *, logit_scale, alpha, beta1, beta2):
    def direction(x, y, beta):
        terms = []
        for i in range(x.shape[0]):
            neg = torch.stack([logit_scale * x[i] @ y[j] for j in range(x.shape[0]) if ids[j] != ids[i]])
            w = neg.shape[0] * torch.softmax(beta * neg, 0)
            pos = logit_scale * x[i] @ y[i]
            terms.append(-pos + torch.log(alpha * torch.exp(pos) + (w * torch.exp(neg)).sum()))
        return torch.stack(terms).mean()

    return (direction(a, b, beta1) + direction(b, a, beta2)) / 2


def euclidean_clip(a, b, ids, *, logit_scale):
    def direction(x, y):
        terms = []
        for i in range(x.shape[0]):
            negatives = [-logit_scale * (x[i] - y[j]).square().sum() for j in range(x.shape[0]) if ids[j] != ids[i]]
            terms.append(_ce(-logit_scale * (x[i] - y[i]).square().sum(), negatives))
        return torch.stack(terms).mean()

    return (direction(a, b) + direction(b, a)) / 2


def kernel_info_nce(a, b, ids, *, kernel, temperature, laplacian_temperature):
    def log_k(x, y):
        dist = (x - y).square().sum().sqrt()
        gaussian, laplacian = -dist.square() / temperature, -dist / laplacian_temperature
        return {"gaussian": gaussian, "laplacian": laplacian, "mixture": torch.logaddexp(gaussian, laplacian)}[kernel]

    z, both, n = torch.cat([a, b]), torch.cat([ids, ids]), a.shape[0]
    terms = []
    for i in range(2 * n):
        negatives = [log_k(z[i], z[k]) for k in range(2 * n) if both[k] != both[i]]
        terms.append(_ce(log_k(z[i], z[(i + n) % (2 * n)]), negatives))
    return torch.stack(terms).mean()


def margin_info_nce(a, b, ids, *, temperature, margin):
    """The additive margin, both directions."""

    def direction(x, y):
        terms = []
        for i in range(x.shape[0]):
            negatives = [x[i] @ y[j] / temperature for j in range(x.shape[0]) if ids[j] != ids[i]]
            terms.append(_ce((x[i] @ y[i] - margin) / temperature, negatives))
        return torch.stack(terms).mean()

    return (direction(a, b) + direction(b, a)) / 2
