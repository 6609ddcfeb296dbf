"""The objective family beyond the core: each against its authors' code or a loop from its paper's equation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import near, sphere
from test_align_uniform import ref_align, ref_moco_uniform

import contrasphere
from contrasphere import functional as CF
from contrasphere.moco import KeyQueue, momentum_copy, momentum_update


# --- Robinson et al.'s HCL code (github.com/joshr17/HCL, image/main.py), with Chuang et al.'s debiased estimator --
def get_negative_mask(batch_size):
    negative_mask = torch.ones((batch_size, 2 * batch_size), dtype=bool)
    for i in range(batch_size):
        negative_mask[i, i] = 0
        negative_mask[i, i + batch_size] = 0
    return torch.cat((negative_mask, negative_mask), 0)


def hcl_reference(out_1, out_2, tau_plus, batch_size, beta, estimator, temperature):
    out = torch.cat([out_1, out_2], dim=0)
    neg = torch.exp(torch.mm(out, out.t().contiguous()) / temperature)
    mask = get_negative_mask(batch_size)
    neg = neg.masked_select(mask).view(2 * batch_size, -1)
    pos = torch.exp(torch.sum(out_1 * out_2, dim=-1) / temperature)
    pos = torch.cat([pos, pos], dim=0)
    if estimator == "hard":
        N = batch_size * 2 - 2
        imp = (beta * neg.log()).exp()
        reweight_neg = (imp * neg).sum(dim=-1) / imp.mean(dim=-1)
        Ng = (-tau_plus * N * pos + reweight_neg) / (1 - tau_plus)
        Ng = torch.clamp(Ng, min=N * np.e ** (-1 / temperature))
    elif estimator == "debiased":  # Chuang et al.'s code: the same with imp = 1
        N = batch_size * 2 - 2
        Ng = (-tau_plus * N * pos + neg.sum(dim=-1)) / (1 - tau_plus)
        Ng = torch.clamp(Ng, min=N * np.e ** (-1 / temperature))
    else:
        Ng = neg.sum(dim=-1)
    return (-torch.log(pos / (pos + Ng))).mean()


def _grad_pair(fn, z_a, z_b):
    value = fn(z_a, z_b)
    return (value.detach(), *torch.autograd.grad(value, (z_a, z_b)))


@pytest.mark.parametrize("tau_plus,beta", [(0.1, 1.0), (0.0, 0.5), (0.3, 2.0), (0.1, 0.0), (0.5, 1.0)])
@pytest.mark.parametrize("temperature", [0.5, 0.2])
def test_hard_negative_matches_authors_code(tau_plus, beta, temperature):
    z_a = sphere(12, 8, seed=61, grad=True)
    z_b = near(z_a, 0.5).requires_grad_()
    estimator = "hard" if beta > 0 else "debiased"
    ours = _grad_pair(
        lambda a, b: CF.hard_negative_nt_xent(a, b, temperature=temperature, tau_plus=tau_plus, beta=beta), z_a, z_b
    )
    ref = _grad_pair(lambda a, b: hcl_reference(a, b, tau_plus, 12, beta, estimator, temperature), z_a, z_b)
    for got, want in zip(ours, ref):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-10)


def test_debiased_matches_authors_code_and_reduces_to_nt_xent():
    z_a = sphere(10, 5, seed=62, grad=True)
    z_b = near(z_a, 0.4).requires_grad_()
    for tau_plus in (0.05, 0.2):
        ours = _grad_pair(lambda a, b, tp=tau_plus: CF.debiased_nt_xent(a, b, temperature=0.5, tau_plus=tp), z_a, z_b)
        ref = _grad_pair(lambda a, b, tp=tau_plus: hcl_reference(a, b, tp, 10, 0.0, "debiased", 0.5), z_a, z_b)
        for got, want in zip(ours, ref):
            torch.testing.assert_close(got, want)
    # no false negatives assumed and no reweighting: NT-Xent itself
    torch.testing.assert_close(
        CF.hard_negative_nt_xent(z_a, z_b, temperature=0.3, tau_plus=0.0, beta=0.0),
        CF.nt_xent(z_a, z_b, temperature=0.3),
    )


def test_hard_negative_stays_finite_where_the_reference_overflows():
    z_a = sphere(16, 8, seed=63, dtype=torch.float32, grad=True)
    z_b = near(z_a, 0.1).float().requires_grad_()
    t = 0.01  # e^{1/t} = e^100 overflows float32
    with torch.no_grad():
        assert not torch.isfinite(hcl_reference(z_a, z_b, 0.1, 16, 1.0, "hard", t))
    ours = CF.hard_negative_nt_xent(z_a, z_b, temperature=t, tau_plus=0.1, beta=1.0)
    assert torch.isfinite(ours)
    want = CF.hard_negative_nt_xent(z_a.double(), z_b.double(), temperature=t, tau_plus=0.1, beta=1.0)
    torch.testing.assert_close(ours.double(), want, rtol=1e-4, atol=1e-4)
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(ours, (z_a, z_b)))


def moco_reference(q, k, queue_dk, tau):
    # MoCo's Algorithm 1 / main_moco.py: logits [l_pos, l_neg], cross-entropy with label 0
    l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", [q, queue_dk.clone().detach()])
    logits = torch.cat([l_pos, l_neg], dim=1) / tau
    return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_moco_matches_reference(dtype, tol):
    q = sphere(9, 16, seed=64, dtype=dtype, grad=True)
    k = near(q, 0.3).to(dtype).requires_grad_()
    queue = sphere(40, 16, seed=65, dtype=dtype)
    ours = CF.moco_info_nce(q, k, queue, temperature=0.2)
    ref = moco_reference(q, k, queue.T, 0.2)
    torch.testing.assert_close(ours, ref, rtol=tol, atol=tol)
    for g, want in zip(torch.autograd.grad(ours, (q, k)), torch.autograd.grad(ref, (q, k))):
        torch.testing.assert_close(g, want, rtol=tol, atol=tol)


def test_align_uniform_queue_is_the_papers_combination():
    q = sphere(9, 16, seed=66, grad=True)
    k = near(q, 0.3)
    queue = sphere(30, 16, seed=67)
    for intra in (True, False):
        ours = CF.align_uniform_queue(q, k, queue, intra_batch=intra)
        ref = 3 * ref_align(q, k, alpha=2) + ref_moco_uniform(q, queue.T, 3.0, intra)
        torch.testing.assert_close(ours, ref)
        torch.testing.assert_close(torch.autograd.grad(ours, q)[0], torch.autograd.grad(ref, q)[0])


def test_key_queue_is_fifo_with_wrap_around():
    queue = KeyQueue(size=5, dim=2, start_empty=True)
    with pytest.raises(ValueError, match="empty"):
        queue.negatives()
    rows = torch.arange(1, 15, dtype=torch.float32)[:, None] * torch.tensor([[1.0, 0.0]])
    queue.push(rows[:3])
    assert torch.equal(queue.negatives(), rows[:3])
    queue.push(rows[3:7])  # 4 more: wraps around, overwriting the oldest
    assert torch.equal(queue.negatives()[:, 0], torch.tensor([6.0, 7.0, 3.0, 4.0, 5.0]))
    queue.push(rows[7:14])  # more than the queue holds: the last 5 survive
    assert sorted(queue.negatives()[:, 0].tolist()) == [10.0, 11.0, 12.0, 13.0, 14.0]
    snapshot = queue.negatives()
    queue.push(rows[:1])
    assert not torch.equal(snapshot, queue.negatives())  # a copy: earlier negatives are untouched
    full = KeyQueue(size=4, dim=3)
    assert full.negatives().shape == (4, 3) and torch.allclose(full.negatives().norm(dim=1), torch.ones(4))
    with pytest.raises(ValueError, match="dimension 2"):
        full.push(torch.ones(2, 2))
    with pytest.raises(ValueError, match="size must be"):
        KeyQueue(size=0, dim=3)


def test_momentum_update_is_an_exponential_moving_average():
    torch.manual_seed(0)
    source = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    target = momentum_copy(source)
    assert all(not p.requires_grad for p in target.parameters())
    before = [p.clone() for p in target.parameters()]
    with torch.no_grad():
        for p in source.parameters():
            p.add_(1.0)
        source[1].running_mean.fill_(3.0)
    momentum_update(target, source, momentum=0.9)
    for old, new, src in zip(before, target.parameters(), source.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * src)
    assert torch.equal(target[1].running_mean, torch.full((2,), 3.0))
    with pytest.raises(ValueError, match="momentum"):
        momentum_update(target, source, momentum=1.5)


def test_bad_input():
    z = sphere(4, 3)
    with pytest.raises(ValueError, match="tau_plus"):
        CF.hard_negative_nt_xent(z, z, tau_plus=1.0)
    with pytest.raises(ValueError, match="beta"):
        CF.hard_negative_nt_xent(z, z, beta=-1.0)
    with pytest.raises(ValueError, match="negatives besides"):
        CF.debiased_nt_xent(z[:1], z[:1])
    with pytest.raises(ValueError, match="same embedding dimension"):
        CF.moco_info_nce(z, z, sphere(5, 4))
    assert math.isfinite(CF.moco_info_nce(z, z, sphere(5, 3)).item())


# --- beyond InfoNCE -----------------------------------------------------------------------------------------------
def off_diagonal(x):  # Barlow Twins' code
    n, _ = x.shape
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def barlow_reference(z1, z2, lambd):
    bn = torch.nn.BatchNorm1d(z1.shape[1], affine=False, dtype=z1.dtype).train()
    c = bn(z1).T @ bn(z2)
    c = c / z1.shape[0]
    on_diag = torch.diagonal(c).add(-1).pow(2).sum()
    return on_diag + lambd * off_diagonal(c).pow(2).sum()


def test_barlow_twins_matches_authors_code():
    z_a = torch.randn(20, 7, dtype=torch.float64, requires_grad=True)
    z_b = (z_a.detach() + 0.5 * torch.randn(20, 7, dtype=torch.float64)).requires_grad_()
    ours = _grad_pair(lambda a, b: CF.barlow_twins(a, b, lambd=0.01), z_a, z_b)
    ref = _grad_pair(lambda a, b: barlow_reference(a, b, 0.01), z_a, z_b)
    for got, want in zip(ours, ref):
        torch.testing.assert_close(got, want)
    # perfectly correlated, decorrelated features: C = I and the loss is 0
    x = torch.randn(64, 4, dtype=torch.float64)
    q = torch.linalg.qr(x - x.mean(0))[0] * 8  # centred, orthogonal columns
    assert CF.barlow_twins(q, q, eps=1e-12).item() == pytest.approx(0.0, abs=1e-8)


@pytest.mark.parametrize("mu", [None, 1.0, 0.3])
def test_spectral_matches_the_equation(mu):
    z_a = (0.6 * torch.randn(9, 5, dtype=torch.float64)).requires_grad_()
    z_b = (z_a.detach() + 0.3 * torch.randn(9, 5, dtype=torch.float64)).requires_grad_()

    def loop(a, b):
        if mu is not None:  # the authors' code: rows longer than sqrt(mu) are projected onto that sphere
            mask_a = (a.norm(dim=1) < math.sqrt(mu)).double().unsqueeze(1)
            mask_b = (b.norm(dim=1) < math.sqrt(mu)).double().unsqueeze(1)
            a = mask_a * a + (1 - mask_a) * F.normalize(a, dim=1) * math.sqrt(mu)
            b = mask_b * b + (1 - mask_b) * F.normalize(b, dim=1) * math.sqrt(mu)
        n = a.shape[0]
        positive = sum(a[i] @ b[i] for i in range(n)) / n
        negative = sum((a[i] @ b[j]) ** 2 for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        return -2 * positive + negative

    ours = _grad_pair(lambda a, b: CF.spectral_contrastive(a, b, mu=mu), z_a, z_b)
    ref = _grad_pair(loop, z_a, z_b)
    for got, want in zip(ours, ref):
        torch.testing.assert_close(got, want)


def swav_sinkhorn_reference(out, epsilon, iterations):
    # SwAV's distributed_sinkhorn on one process
    Q = torch.exp(out / epsilon).t()
    B, K = Q.shape[1], Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(iterations):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t()


def test_sinkhorn_and_swav_match_reference():
    z_a = sphere(24, 6, seed=68, grad=True)
    z_b = near(z_a, 0.4).requires_grad_()
    prototypes = sphere(10, 6, seed=69)
    scores = z_a.detach() @ prototypes.T
    q = CF.sinkhorn(scores, epsilon=0.05, iterations=3)
    torch.testing.assert_close(q, swav_sinkhorn_reference(scores, 0.05, 3))
    torch.testing.assert_close(q.sum(1), torch.ones(24, dtype=torch.float64))
    assert torch.isfinite(CF.sinkhorn(scores.float(), epsilon=0.001)).all()  # e^(1/0.001) would overflow

    def reference(a, b):
        s_a, s_b = a @ prototypes.T, b @ prototypes.T
        q_a, q_b = swav_sinkhorn_reference(s_a.detach(), 0.05, 3), swav_sinkhorn_reference(s_b.detach(), 0.05, 3)
        loss = -0.5 * torch.mean(
            torch.sum(q_a * F.log_softmax(s_b / 0.1, dim=1), dim=1)
            + torch.sum(q_b * F.log_softmax(s_a / 0.1, dim=1), dim=1)
        )
        return loss

    ours = _grad_pair(lambda a, b: CF.swav(a, b, prototypes, temperature=0.1), z_a, z_b)
    for got, want in zip(ours, _grad_pair(reference, z_a, z_b)):
        torch.testing.assert_close(got, want)


# --- many views and modalities ------------------------------------------------------------------------------------
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

    ours = _grad_pair(lambda a, b: CF.margin_info_nce(a, b, temperature=tau, margin=m, kind=kind), z_a, z_b)
    for got, want in zip(ours, _grad_pair(loop, z_a, z_b)):
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
        ours = _grad_pair(lambda a, b, r=r: CF.cwcl(a, b, temperature=tau, z_ref=r), z_a, z_b)
        ref = _grad_pair(lambda a, b, r=r: loop(a, b, (a if r is None else r).detach()), z_a, z_b)
        for got, want in zip(ours, ref):
            torch.testing.assert_close(got, want)


def test_more_bad_input():
    z = sphere(4, 3)
    with pytest.raises(ValueError, match="at least 2"):
        CF.cmc(z[None])
    with pytest.raises(ValueError, match=r"shape \(V, N, D\)"):
        CF.symile(z)
    with pytest.raises(ValueError, match="kind must be"):
        CF.margin_info_nce(z, z, kind="cosine")
    with pytest.raises(ValueError, match="one row per sample"):
        CF.cwcl(z, z, z_ref=sphere(3, 2))
    with pytest.raises(ValueError, match="variance"):
        CF.barlow_twins(z[:1], z[:1])
    with pytest.raises(ValueError, match="iterations"):
        CF.sinkhorn(z @ z.T, iterations=0)


# --- mixing ---------------------------------------------------------------------------------------------------------
def test_mochi_negatives_are_the_papers_mixtures():
    q = sphere(5, 6, seed=80)
    queue = sphere(40, 6, seed=81)
    synthetic = CF.mochi_negatives(q, queue, n_hard=8, s_mix=30, s_query=20, generator=torch.Generator().manual_seed(0))
    assert synthetic.shape == (5, 50, 6)
    torch.testing.assert_close(synthetic.norm(dim=2), torch.ones(5, 50, dtype=torch.float64))
    for i in range(5):
        hardest = queue[(q[i] @ queue.T).topk(8).indices]  # (8, D)
        for h in synthetic[i, :30]:  # a positive combination of two of the hardest: h ~ alpha n_j + (1-alpha) n_l
            pair_fits = [
                torch.linalg.lstsq(torch.stack([hardest[j], hardest[m]]).T, h[:, None]).solution.flatten()
                for j in range(8)
                for m in range(8)
            ]
            assert any(
                (c >= -1e-9).all() and torch.allclose(torch.stack([hardest[j], hardest[m]]).T @ c, h, atol=1e-9)
                for c, (j, m) in zip(pair_fits, [(j, m) for j in range(8) for m in range(8)])
            )
        for h in synthetic[i, 30:]:  # beta q + (1 - beta) n_j with beta <= 0.5: q's weight never exceeds n_j's
            fits = [torch.linalg.lstsq(torch.stack([q[i], n]).T, h[:, None]).solution.flatten() for n in hardest]
            assert any(
                c[0] >= -1e-9 and c[0] <= c[1] + 1e-9 and torch.allclose(torch.stack([q[i], n]).T @ c, h, atol=1e-9)
                for c, n in zip(fits, hardest)
            )


def test_mochi_matches_moco_reference_with_the_synthetic_negatives():
    q = sphere(7, 8, seed=82, grad=True)
    k = near(q, 0.3)
    queue = sphere(30, 8, seed=83)
    synthetic = CF.mochi_negatives(q, queue, n_hard=10, s_mix=6, s_query=4, generator=torch.Generator().manual_seed(1))
    ours = CF.mochi(q, k, queue, temperature=0.2, synthetic=synthetic)
    l_pos = (q * k).sum(1, keepdim=True)
    l_neg = q @ queue.T
    l_syn = torch.einsum("nd,nsd->ns", q, synthetic)
    logits = torch.cat([l_pos, l_neg, l_syn], dim=1) / 0.2
    ref = F.cross_entropy(logits, torch.zeros(7, dtype=torch.long))
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, q)[0], torch.autograd.grad(ref, q)[0])
    no_synthetic = CF.mochi(q, k, queue, temperature=0.2, s_mix=0, s_query=0)
    torch.testing.assert_close(no_synthetic, CF.moco_info_nce(q, k, queue, temperature=0.2))
    seeded = [CF.mochi(q, k, queue, n_hard=10, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(seeded[0], seeded[1]) and seeded[0] > no_synthetic  # harder negatives, larger loss


def test_i_mix_matches_the_authors_weighted_cross_entropies():
    z_a = sphere(9, 5, seed=84, grad=True)
    z_b = near(z_a, 0.4).requires_grad_()
    x = torch.randn(9, 3)
    mixed, index, lam = CF.mix_inputs(x, alpha=1.0, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(mixed, lam[:, None] * x + (1 - lam[:, None]) * x[index])
    assert sorted(index.tolist()) == list(range(9)) and bool(((lam >= 0.5) & (lam <= 1)).all())
    again = CF.mix_inputs(x, alpha=1.0, generator=torch.Generator().manual_seed(4))
    assert torch.equal(again[1], index) and torch.equal(again[2], lam)
    lam = lam.double()

    def reference(a, b):  # the authors' MoCo-based snippet, with the batch's other view as candidates
        criterion = torch.nn.CrossEntropyLoss(reduction="none")
        logits = a @ b.T / 0.2
        return (lam * criterion(logits, torch.arange(9)) + (1.0 - lam) * criterion(logits, index)).mean()

    ours = _grad_pair(lambda a, b: CF.i_mix(a, b, index, lam, temperature=0.2), z_a, z_b)
    for got, want in zip(ours, _grad_pair(reference, z_a, z_b)):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(CF.i_mix(z_a, z_b, index, 1.0), CF.info_nce(z_a, z_b, temperature=0.2))
    with pytest.raises(ValueError, match="mix_lambda"):
        CF.i_mix(z_a, z_b, index, 1.5)
    with pytest.raises(ValueError, match="one weight per row"):
        CF.i_mix(z_a, z_b, index, torch.ones(3))
    with pytest.raises(ValueError, match="mix_index must index"):
        CF.i_mix(z_a, z_b, index + 1, 0.5)


# --- CACR, against the authors' code (github.com/JegZheng/CACR-SSL, Euclidean cost), on the CPU -------------------
def cacr_loss1(latent_codes_list, alpha=1.0, tau_pos=1.0):
    loss1 = 0.0
    for x in range(len(latent_codes_list)):
        z_x = latent_codes_list[x]
        mask = list(range(len(latent_codes_list)))
        mask.pop(x)
        masked_z_x = torch.stack(latent_codes_list, dim=0)[mask]
        cost = (z_x - masked_z_x).norm(p=2, dim=-1).pow(2).transpose(1, 0).mul(alpha)
        dist = cost.mul(tau_pos / alpha)
        weights = torch.softmax(dist, dim=1)
        loss1 += (cost * weights).sum(1).mean()
    return loss1 / (len(latent_codes_list))


def cacr_negative(z_x, z_y, beta=1.0, tau_neg=1.0):
    cost = torch.norm(z_x[:, None] - z_y, dim=-1).pow(2).mul(-beta)
    cost = cost.masked_select(~torch.from_numpy(np.eye(cost.shape[0], dtype=bool))).view(
        cost.shape[0], cost.shape[0] - 1
    )
    dist = cost.mul(tau_neg / beta)
    weights = torch.softmax(dist, dim=1)
    return (cost * weights).sum(1).mean()


def cacr_loss2(latent_codes_list, beta=1.0, tau_neg=1.0):
    loss2, counter = 0.0, 0
    for x in range(len(latent_codes_list)):
        for y in range(x + 1, len(latent_codes_list)):
            loss2 += cacr_negative(latent_codes_list[x], latent_codes_list[y], beta=beta, tau_neg=tau_neg)
            counter += 1
    return loss2 / counter


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
def macl_authors(fx, gx, tau_init, coefficient, variant):
    logits = fx @ gx.T
    A = (torch.trace(logits) / fx.shape[0]).detach()
    tau = tau_init * coefficient**A if variant == "a" else tau_init * (1 + coefficient * A)
    P = torch.softmax(logits / tau, dim=1)
    mask = torch.ones(P.shape, dtype=torch.float64).fill_diagonal_(0).bool()
    W0 = (P.masked_select(mask)).view(P.shape[0], -1).sum(-1)
    W = torch.ones(fx.shape[0], dtype=torch.float64) / W0
    return (-W.detach() * torch.log(P).diag()).mean()


@pytest.mark.parametrize(
    "schedule,variant,coefficient", [("power", "a", 2.0), ("linear", "b", 1.0), ("power", "a", 3.5)]
)
def test_macl_matches_authors_code(schedule, variant, coefficient):
    z_a = sphere(12, 6, seed=95, grad=True)
    z_b = near(z_a, 0.5).requires_grad_()
    ours = _grad_pair(lambda a, b: CF.macl(a, b, temperature=0.1, alpha=coefficient, schedule=schedule), z_a, z_b)
    ref = _grad_pair(lambda a, b: macl_authors(a, b, 0.1, coefficient, variant), z_a, z_b)
    for got, want in zip(ours, ref):
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="schedule"):
        CF.macl(z_a, z_b, schedule="cosine")


# --- decoupled uniformity / KCL, against the authors' DecoupledUniformityLoss --------------------------------------
def kcl_authors(z, prior, kernel, sigma, lambda_, t):
    # z: (bsize, nviews, dim) as in the authors' code
    z = F.normalize(z, p=2, dim=-1)
    bs = z.shape[0]
    z = torch.mean(z, dim=1)
    if prior is not None:
        if len(prior.shape) == 1:
            prior = prior.unsqueeze(1).double()
        if kernel == "rbf":
            sim = torch.exp(-torch.cdist(prior, prior).pow(2) / (2 * sigma**2))
        else:
            unit = F.normalize(prior, dim=1)
            sim = unit @ unit.T
        alpha = torch.inverse(sim + lambda_ * torch.eye(bs, dtype=torch.float64)) @ sim
        z = alpha.detach() @ z
    return torch.pdist(z, p=2).pow(2).mul(-t).exp().mean().log()


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


# --- AMCL, against the authors' AMCLNTXentLoss (github.com/LeiWangR/cl, amcl/losses.py) ----------------------------
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


@pytest.mark.parametrize("topk", [3, 100])
def test_amcl_matches_authors_code(topk):
    torch.manual_seed(0)
    loss = contrasphere.create_loss("amcl", dim=6, num_heads=2, beta=0.01, topk=topk)
    z1 = torch.randn(7, 2, 6, requires_grad=True)
    z2 = (z1.detach() + 0.5 * torch.randn(7, 2, 6)).requires_grad_()
    ours = loss(z1, z2)
    ref = amcl_authors(z1, z2, loss.phi, 0.01, 1e-5, 2.0, topk, 6)
    torch.testing.assert_close(ours, ref)
    params = (z1, z2, *loss.phi.parameters())
    for g, want in zip(torch.autograd.grad(ours, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(g, want)
    with pytest.raises(ValueError, match=r"\(B, 2, 6\)"):
        loss(z1[:, 0], z2[:, 0])


# --- feature transformation, against the authors' RGBMoCo_dropmix_norm (mix_target='posneg') ---------------------
def ft_authors(q, k, queue, pos_mask, neg_mask, indices, T, postmix_norm=False):
    k = k.detach()
    queue = queue.clone().detach()
    q_mix = pos_mask * q + (1 - pos_mask) * k
    k_mix = pos_mask * k + (1 - pos_mask) * q
    q, k = q_mix, k_mix
    queue = neg_mask * queue + (1 - neg_mask) * queue[indices]
    if postmix_norm:
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    bsz = q.shape[0]
    pos = torch.bmm(q.view(bsz, 1, -1), k.view(bsz, -1, 1)).view(bsz, 1)
    neg = torch.mm(queue, q.transpose(1, 0)).transpose(0, 1)
    out = torch.div(torch.cat((pos, neg), dim=1), T).squeeze().contiguous()
    return F.cross_entropy(out, torch.zeros(bsz, dtype=torch.long))


@pytest.mark.parametrize("per_dimension,postmix_norm", [(False, False), (True, False), (False, True)])
def test_feature_transformation_matches_authors_code(per_dimension, postmix_norm):
    q = sphere(8, 6, seed=97, grad=True)
    k = near(q, 0.3)
    queue = sphere(25, 6, seed=98)
    g = torch.Generator().manual_seed(5)
    if per_dimension:  # the authors' dim_mask='both': one Beta weight per coordinate
        pos_mask = 1 + torch.distributions.Beta(2.0, 2.0).sample((8, 6)).double()
        neg_mask = torch.distributions.Beta(1.6, 1.6).sample((25, 6)).double()
        indices = torch.randperm(25, generator=g)
    else:
        draw = CF.feature_transformation_draw(25, generator=g)
        pos_mask, neg_mask, indices = draw["pos_lambda"], draw["neg_lambda"], draw["neg_index"]
        assert 1 <= pos_mask <= 2 and 0 <= neg_mask <= 1
    ours = CF.feature_transformation(
        q,
        k,
        queue,
        pos_lambda=pos_mask,
        neg_lambda=neg_mask,
        neg_index=indices,
        temperature=0.2,
        normalize_positives=postmix_norm,
    )
    ref = ft_authors(q, k, queue, pos_mask, neg_mask, indices, 0.2, postmix_norm)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, q)[0], torch.autograd.grad(ref, q)[0])
    # lambda = mu = 1 leaves the features alone: MoCo's loss
    plain = CF.feature_transformation(q, k, queue, pos_lambda=1.0, neg_lambda=1.0, neg_index=indices, temperature=0.2)
    torch.testing.assert_close(plain, CF.moco_info_nce(q, k, queue, temperature=0.2))


# --- poly-view, against the PVCLoss of github.com/pakoromilas/Multi-View-CL (geometric) and the equation -----------
def pvc_geometric_reference(z, multiplier, tau):
    z = F.normalize(z, p=2, dim=1)
    k = z.shape[0] // multiplier
    views = torch.stack([z[i * k : (i + 1) * k] for i in range(multiplier)], dim=1)
    scores = torch.einsum("jmd,knd->jmnk", views, views) / tau
    losses_alpha = []
    for alpha in range(multiplier):
        losses_alpha_beta = []
        for beta in range(multiplier):
            if alpha != beta:
                logits = scores[:, alpha]
                labels = torch.arange(k) + beta * k
                mask_sample = torch.eye(k, dtype=z.dtype)[:, None, :]
                mask_beta = torch.ones(multiplier, dtype=z.dtype)[None, :, None].clone()
                mask_beta[:, beta] = 0
                logits = logits - mask_beta * mask_sample * 1e9
                logits = logits.reshape(k, multiplier * k)
                losses_alpha_beta.append(F.cross_entropy(logits, labels))
        losses_alpha.append(torch.mean(torch.stack(losses_alpha_beta, dim=-1), dim=-1))
    return torch.mean(torch.stack(losses_alpha, dim=-1))


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
