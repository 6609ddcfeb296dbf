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
