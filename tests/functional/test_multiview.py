"""Many views and modalities: CMC, Symile, margins, CWCL, CACR, MACL, KCL and poly-view, against their authors'
code (tests/references) or a loop written from their paper's equation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import grad_pair, near, sphere
from references.cacr import cacr_loss1, cacr_loss2
from references.kcl import kcl_authors
from references.macl import macl_authors
from references.poly_view import pvc_geometric_reference

from contrasphere import functional as CF


def test_cmc_is_the_mean_over_ordered_view_pairs():
    views = torch.stack([sphere(8, 5, seed=s) for s in (70, 71, 72)]).requires_grad_()
    loop = sum(CF.info_nce(views[i], views[j], temperature=0.1) for i in range(3) for j in range(3) if i != j) / 6
    torch.testing.assert_close(CF.cmc(views, temperature=0.1), loop)
    two = CF.cmc([views[0], views[1]], temperature=0.1)
    both = (CF.info_nce(views[0], views[1], temperature=0.1) + CF.info_nce(views[1], views[0], temperature=0.1)) / 2
    torch.testing.assert_close(two, both)


def test_symile_matches_the_equation_and_reduces_to_clip():
    xs = torch.stack([sphere(7, 4, seed=s) for s in (73, 74, 75)]).requires_grad_()
    scale = 5.0

    def loop(xs):
        m, n = xs.shape[0], xs.shape[1]
        terms = []
        for target in range(m):
            for i in range(n):
                scores = torch.stack(
                    [
                        scale
                        * torch.prod(
                            torch.stack([xs[l, i] for l in range(m) if l != target] + [xs[target, j]]), 0
                        ).sum()
                        for j in range(n)
                    ]
                )
                terms.append(torch.logsumexp(scores, 0) - scores[i])
        return torch.stack(terms).mean()

    ours = CF.symile(xs, logit_scale=scale)
    ref = loop(xs)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, xs)[0], torch.autograd.grad(ref, xs)[0])
    torch.testing.assert_close(CF.symile(xs[:2], logit_scale=scale), CF.clip_loss(xs[0], xs[1], logit_scale=scale))


@pytest.mark.parametrize("kind", ["additive", "angular"])
def test_margins_match_the_equation(kind):
    z_a = sphere(10, 6, seed=76, grad=True)
    z_b = near(z_a, 0.5).requires_grad_()
    tau, m = 0.1, 0.2

    def loop(a, b):
        terms = []
        for x, y in ((a, b), (b, a)):
            for i in range(x.shape[0]):
                cos = x[i] @ y[i]
                phi = cos - m if kind == "additive" else torch.cos(torch.acos(cos) + m)
                scores = torch.stack([phi] + [x[i] @ y[j] for j in range(y.shape[0]) if j != i]) / tau
                terms.append(torch.logsumexp(scores, 0) - scores[0])
        return torch.stack(terms).mean()

    ours = grad_pair(lambda a, b: CF.margin_info_nce(a, b, temperature=tau, margin=m, kind=kind), z_a, z_b)
    for got, want in zip(ours, grad_pair(loop, z_a, z_b)):
        torch.testing.assert_close(got, want)
    no_margin = CF.margin_info_nce(z_a, z_b, temperature=tau, margin=0.0, kind=kind)
    both = (CF.info_nce(z_a, z_b, temperature=tau) + CF.info_nce(z_b, z_a, temperature=tau)) / 2
    torch.testing.assert_close(no_margin, both)
    assert CF.margin_info_nce(z_a, z_b, temperature=tau, margin=0.3, kind=kind) > no_margin


def test_cwcl_matches_the_equation():
    z_a = sphere(9, 5, seed=77, grad=True)
    z_b = near(z_a, 0.5).requires_grad_()
    ref_emb = sphere(9, 3, seed=78)
    tau = 0.2

    def loop(a, b, r):
        w = (1 + r @ r.T) / 2
        terms = []
        for x, y in ((a, b), (b, a)):
            logp = torch.log_softmax(x @ y.T / tau, dim=1)
            terms.append(-((w * logp).sum(1) / w.sum(1)).mean())
        return (terms[0] + terms[1]) / 2

    for r in (None, ref_emb):
        ours = grad_pair(lambda a, b, r=r: CF.cwcl(a, b, temperature=tau, z_ref=r), z_a, z_b)
        ref = grad_pair(lambda a, b, r=r: loop(a, b, (a if r is None else r).detach()), z_a, z_b)
        for got, want in zip(ours, ref):
            torch.testing.assert_close(got, want)


def test_bad_input():
    z = sphere(4, 3)
    with pytest.raises(ValueError, match="at least 2"):
        CF.cmc(z[None])
    with pytest.raises(ValueError, match=r"shape \(V, N, D\)"):
        CF.symile(z)
    with pytest.raises(ValueError, match="kind must be"):
        CF.margin_info_nce(z, z, kind="cosine")
    with pytest.raises(ValueError, match="one row per sample"):
        CF.cwcl(z, z, z_ref=sphere(3, 2))


# --- CACR, against the authors' code (github.com/JegZheng/CACR-SSL, Euclidean cost), on the CPU -------------------
@pytest.mark.parametrize("n_views", [2, 4])
@pytest.mark.parametrize("alpha,beta,tau_pos,tau_neg", [(1.0, 1.0, 1.0, 1.0), (2.0, 0.5, 3.0, 0.7)])
def test_cacr_matches_authors_code(n_views, alpha, beta, tau_pos, tau_neg):
    views = torch.stack([sphere(11, 6, seed=90 + v) for v in range(n_views)]).requires_grad_()
    ours = CF.cacr(views, alpha=alpha, beta=beta, tau_pos=tau_pos, tau_neg=tau_neg)
    as_list = list(views.unbind(0))
    ref = cacr_loss1(as_list, alpha, tau_pos) + cacr_loss2(as_list, beta, tau_neg)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, views)[0], torch.autograd.grad(ref, views)[0])
    if n_views == 2:  # one positive: the attraction is alpha times the alignment
        attraction_only = CF.cacr(views, alpha=alpha, beta=beta, tau_pos=tau_pos, tau_neg=tau_neg) - cacr_loss2(
            as_list, beta, tau_neg
        )
        torch.testing.assert_close(attraction_only, alpha * CF.alignment(views[0], views[1]))


# --- MACL, against the authors' code (github.com/chenhaoxing/MACL, macl.py) ----------------------------------------
@pytest.mark.parametrize(
    "schedule,variant,coefficient", [("power", "a", 2.0), ("linear", "b", 1.0), ("power", "a", 3.5)]
)
def test_macl_matches_authors_code(schedule, variant, coefficient):
    z_a = sphere(12, 6, seed=95, grad=True)
    z_b = near(z_a, 0.5).requires_grad_()
    ours = grad_pair(lambda a, b: CF.macl(a, b, temperature=0.1, alpha=coefficient, schedule=schedule), z_a, z_b)
    ref = grad_pair(lambda a, b: macl_authors(a, b, 0.1, coefficient, variant), z_a, z_b)
    for got, want in zip(ours, ref):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="schedule"):
        CF.macl(z_a, z_b, schedule="cosine")


def _macl_decimal(a, b, temperature, alpha, schedule):
    """MACL's loss and gradients in 60-digit decimal arithmetic, from the authors' formula (W and tau held fixed).

    ``mean_i -W_i log P_ii`` with ``P = softmax(<a_i, b_j> / tau)`` and ``W_i = 1 / sum_{j != i} P_ij``; its gradient
    in the logits is ``W_i (P_ij - [i = j]) / (N tau)``, so ``grad_a = G b`` and ``grad_b = G^T a``. Written from the
    equation, not from the library's rewrite; Decimal's exp and ln are correctly rounded at any exponent, and the two
    quantities that cancel (``-log P_ii`` and ``1 - P_ii``) are formed from the negatives' mass directly.
    """
    import decimal
    from decimal import Decimal

    with decimal.localcontext(decimal.Context(prec=60, Emax=10**9, Emin=-(10**9))):
        a_d = [[Decimal(x) for x in row] for row in a.tolist()]  # float64 values, exactly
        b_d = [[Decimal(x) for x in row] for row in b.tolist()]
        n, d = len(a_d), len(a_d[0])
        logits = [[sum(x * y for x, y in zip(ai, bj)) for bj in b_d] for ai in a_d]
        mean_positive = sum(logits[i][i] for i in range(n)) / n
        t0 = Decimal(temperature)
        tau = t0 * Decimal(alpha) ** mean_positive if schedule == "power" else t0 * (1 + Decimal(alpha) * mean_positive)
        loss, grad_logits = Decimal(0), []
        for i in range(n):
            scores = [x / tau for x in logits[i]]
            e = [(x - max(scores)).exp() for x in scores]
            negatives = sum(e[:i] + e[i + 1 :])
            total = negatives + e[i]
            r = negatives / e[i]  # -log P_ii = log(1 + r), by its series where 1 + r would round to 1
            nll = r - r * r / 2 + r * r * r / 3 if r < Decimal("1e-25") else (1 + r).ln()
            weight = total / negatives
            loss += weight * nll / n
            row = [weight * e[j] / total / (n * tau) for j in range(n)]
            row[i] = -weight * (negatives / total) / (n * tau)  # W_i (P_ii - 1), without the cancellation
            grad_logits.append(row)
        grad_a = [[sum(grad_logits[i][j] * b_d[j][k] for j in range(n)) for k in range(d)] for i in range(n)]
        grad_b = [[sum(grad_logits[i][j] * a_d[i][k] for i in range(n)) for k in range(d)] for j in range(n)]

    def as_tensor(rows):
        return torch.tensor([[float(x) for x in row] for row in rows], dtype=torch.float64)

    return torch.tensor(float(loss), dtype=torch.float64), as_tensor(grad_a), as_tensor(grad_b)


MACL_TEMPERATURES = [1.0, 0.3, 0.1, 0.05, 0.02, 0.015, 0.01, 5e-3, 2e-3, 1e-3]


@pytest.mark.parametrize("temperature", MACL_TEMPERATURES)
@pytest.mark.parametrize("schedule,alpha", [("power", 2.0), ("linear", 1.0)])
@pytest.mark.parametrize("noise", [0.3, 1.5])  # positives close (the weights explode) and far (hard rows)
def test_macl_float32_and_float64_agree_with_exact_arithmetic_at_small_temperatures(
    temperature, schedule, alpha, noise
):
    z_a = sphere(12, 5, seed=96, dtype=torch.float32)
    z_b = near(z_a, noise, seed=97)
    exact = _macl_decimal(z_a.double(), z_b.double(), temperature, alpha, schedule)

    def loss(x, y):
        return CF.macl(x, y, temperature=temperature, alpha=alpha, schedule=schedule)

    for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-4)):
        got = grad_pair(loss, z_a.to(dtype).requires_grad_(), z_b.to(dtype).requires_grad_())
        for part, g, want in zip(("loss", "grad z_a", "grad z_b"), got, exact):
            atol = tol * float(want.abs().max())  # a gradient's small entries, relative to its scale
            torch.testing.assert_close(g.double(), want, rtol=tol, atol=atol, msg=f"{dtype} {part}")


@pytest.mark.parametrize("temperature", [5e-4, 2e-4, 1e-4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_macl_stays_finite_below_the_tested_temperatures(temperature, dtype):
    z_a = sphere(12, 5, seed=98, dtype=dtype, grad=True)
    z_b = near(z_a, 0.3, seed=99).requires_grad_()
    value, grad_a, grad_b = grad_pair(lambda x, y: CF.macl(x, y, temperature=temperature), z_a, z_b)
    assert torch.isfinite(value) and torch.isfinite(grad_a).all() and torch.isfinite(grad_b).all()


def test_macl_refuses_a_schedule_that_takes_the_temperature_to_zero():
    z_a = sphere(6, 4, seed=100)
    # the linear schedule tau_0 (1 + alpha A) crosses 0 at A = -1 / alpha: antipodal "positives" give A = -1
    with pytest.raises(ValueError, match=r"temperature .* is -0.1 at the batch's mean positive similarity A = -1"):
        CF.macl(z_a, -z_a, schedule="linear", alpha=2.0)
    with pytest.raises(ValueError, match="at least 1e-20"):  # tau_0 alpha^A = 0.1 * 1e-30 at A = -1
        CF.macl(z_a, -z_a, alpha=1e30)
    assert torch.isfinite(CF.macl(z_a, near(z_a, 0.3), schedule="linear", alpha=1.0))


# --- decoupled uniformity / KCL, against the authors' DecoupledUniformityLoss --------------------------------------
@pytest.mark.parametrize("kernel,with_prior", [("rbf", False), ("rbf", True), ("cosine", True)])
def test_decoupled_uniformity_matches_authors_code(kernel, with_prior):
    raw = torch.randn(3, 10, 5, dtype=torch.float64, requires_grad=True)  # 3 views of 10 samples, not normalised
    prior = torch.randn(10, 2, dtype=torch.float64) if with_prior else None
    ours = CF.decoupled_uniformity(raw, prior, t=2.0, kernel=kernel, sigma=0.7, lambda_=0.05)
    ref = kcl_authors(raw.transpose(0, 1), prior, kernel, 0.7, 0.05, 2.0)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, raw)[0], torch.autograd.grad(ref, raw)[0])
    with pytest.raises(ValueError, match="one row of attributes per sample"):
        CF.decoupled_uniformity(raw, torch.ones(4, 2))


# --- poly-view, against the PVCLoss of github.com/pakoromilas/Multi-View-CL (geometric) and the equation -----------
@pytest.mark.parametrize("n_views", [2, 3, 4])
def test_poly_view_geometric_matches_reference(n_views):
    views = torch.stack([sphere(9, 5, seed=110 + v) for v in range(n_views)]).requires_grad_()
    ours = CF.poly_view(F.normalize(views, dim=-1), temperature=0.2)  # the reference normalises inside
    ref = pvc_geometric_reference(views.reshape(n_views * 9, 5), n_views, 0.2)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, views)[0], torch.autograd.grad(ref, views)[0])
    if n_views == 2:
        torch.testing.assert_close(ours, CF.nt_xent(views[0], views[1], temperature=0.2))


def test_poly_view_arithmetic_matches_the_equation():
    n_views, n, tau = 3, 7, 0.3
    views = torch.stack([sphere(n, 4, seed=120 + v) for v in range(n_views)]).requires_grad_()

    def loop(views):
        terms = []
        for j in range(n):
            for a in range(n_views):
                probs = []
                for b in range(n_views):
                    if b == a:
                        continue
                    candidates = [views[b, j]] + [views[c, k] for c in range(n_views) for k in range(n) if k != j]
                    scores = torch.stack([views[a, j] @ x for x in candidates]) / tau
                    probs.append(torch.softmax(scores, 0)[0])
                terms.append(-torch.log(torch.stack(probs).mean()))
        return torch.stack(terms).mean()

    ours = CF.poly_view(views, temperature=tau, method="arithmetic")
    ref = loop(views)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, views)[0], torch.autograd.grad(ref, views)[0])
    with pytest.raises(ValueError, match="method"):
        CF.poly_view(views, method="harmonic")
