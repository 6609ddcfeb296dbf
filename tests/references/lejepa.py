"""Balestriero & LeCun (LeJEPA), 2025: SIGReg as the paper's listing and the authors' code compute it.

Three ports, each with its random directions ``A`` passed in (so that a test can use the library's seeded ones):
the paper's ``SIGReg(x, global_step, num_slices=256)`` listing (arXiv 2511.08544, Sec. 4.2; ``A`` drawn there from
a generator seeded with ``global_step``); ``SIGReg`` of MINIMAL.md in github.com/rbalestr-lab/lejepa (the 50-line
version: 256 slices from an unseeded ``torch.randn``); and the package's ``lejepa.univariate.EppsPulley`` wrapped
in ``lejepa.multivariate.SlicingUnivariateTest`` (one process: the ``all_reduce`` calls are identities and
``world_size`` is 1).
"""

from __future__ import annotations

import torch


def sigreg_paper_listing(x, A):
    """The paper's listing on one process (``all_reduce`` the identity, ``world_size`` 1); ``x``: ``(N, K)``.
    It returns the statistic of every slice; LeJEPA averages it (and over the views)."""
    A /= A.norm(p=2, dim=0)
    # -- Epps-Pulley stat. see Sec. 4.3 for alt. --
    # integration points
    t = torch.linspace(-5, 5, 17, dtype=x.dtype)
    # theoretical CF for N(0, 1) and Gauss. window
    exp_f = torch.exp(-0.5 * t**2)
    # empirical CF -- gathered across devices --
    x_t = (x @ A).unsqueeze(2) * t  # (N, M, T)
    ecf = (1j * x_t).exp().mean(0)
    # weighted L2 distance
    err = (ecf - exp_f).abs().square().mul(exp_f)
    N = x.size(0)
    T = torch.trapz(err, t, dim=1) * N
    return T


class SIGReg(torch.nn.Module):  # MINIMAL.md, float32 buffers as there; `A` replaces the unseeded draw
    def __init__(self, knots=17):
        super().__init__()
        t = torch.linspace(0, 3, knots, dtype=torch.float32)
        dt = 3 / (knots - 1)
        weights = torch.full((knots,), 2 * dt, dtype=torch.float32)
        weights[[0, -1]] = dt
        window = torch.exp(-t.square() / 2.0)
        self.register_buffer("t", t)
        self.register_buffer("phi", window)
        self.register_buffer("weights", weights * window)

    def forward(self, proj, A):
        # A = torch.randn(proj.size(-1), 256, device="cuda")
        A = A.div_(A.norm(p=2, dim=0))
        x_t = (proj @ A).unsqueeze(-1) * self.t
        err = (x_t.cos().mean(-3) - self.phi).square() + x_t.sin().mean(-3).square()
        statistic = (err @ self.weights) * proj.size(-2)
        return statistic.mean()


class EppsPulley(torch.nn.Module):  # lejepa/univariate/epps_pulley.py, trapezoid, one process
    def __init__(self, t_max: float = 3, n_points: int = 17, integration: str = "trapezoid"):
        super().__init__()
        assert n_points % 2 == 1
        self.integration = integration
        self.n_points = n_points
        self.world_size = 1
        t = torch.linspace(0, t_max, n_points, dtype=torch.float32)
        self.register_buffer("t", t)
        dt = t_max / (n_points - 1)
        weights = torch.full((n_points,), 2 * dt, dtype=torch.float32)
        weights[[0, -1]] = dt  # Half-weight at t=0
        self.register_buffer("phi", self.t.square().mul_(0.5).neg_().exp_())
        self.register_buffer("weights", weights * self.phi)

    def forward(self, x):
        N = x.size(-2)
        x_t = x.unsqueeze(-1) * self.t  # (*, N, K, n_points)
        cos_vals = torch.cos(x_t)
        sin_vals = torch.sin(x_t)
        cos_mean = cos_vals.mean(-3)  # (*, n_points)
        sin_mean = sin_vals.mean(-3)  # (*, n_points)
        err = (cos_mean - self.phi).square() + sin_mean.square()
        return (err @ self.weights) * N * self.world_size


def sliced_test_reference(x, univariate_test, A):
    """``SlicingUnivariateTest(univariate_test, num_slices, reduction="mean")(x)`` with the slices ``A`` given
    (the package draws them from a generator seeded with its global step)."""
    A = A / A.norm(p=2, dim=0)
    stats = univariate_test(x @ A)
    return stats.mean()
