"""The contrastive objectives against loops written from their papers' equations, the authors' code and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import near, sphere
from references.dcl import yeh_dcl, yeh_dclw_weight
from references.open_clip import open_clip_reference
from references.supcontrast import hobbitlong_supcon

from contrasphere import functional as CF


# --- independent references --------------------------------------------------------------------------------------
def loop_info_nce(a, b, tau, negatives=None):
    terms = []
    for i in range(a.shape[0]):
        scores = [a[i] @ b[j] / tau for j in range(b.shape[0])]
        if negatives is not None:
            scores += [a[i] @ k / tau for k in negatives]
        scores = torch.stack(scores)
        terms.append(-(scores[i] - torch.log(torch.exp(scores).sum())))
    return torch.stack(terms).mean()


def loop_nt_xent(a, b, tau):
    z = torch.cat([a, b])
    n2 = z.shape[0]
    terms = []
    for i in range(n2):
        p = (i + n2 // 2) % n2
        denominator = sum(torch.exp(z[i] @ z[k] / tau) for k in range(n2) if k != i)
        terms.append(-torch.log(torch.exp(z[i] @ z[p] / tau) / denominator))
    return torch.stack(terms).mean()


def loop_siglip(a, b, t, bias):
    total = 0.0
    for i in range(a.shape[0]):
        for j in range(b.shape[0]):
            y = 1.0 if i == j else -1.0
            total = total - torch.log(torch.sigmoid(y * (t * (a[i] @ b[j]) + bias)))
    return total / a.shape[0]


# --- parity: value and gradient ----------------------------------------------------------------------------------
CASES = {
    "info_nce": (lambda a, b: CF.info_nce(a, b, temperature=0.2), lambda a, b: loop_info_nce(a, b, 0.2)),
    "nt_xent": (lambda a, b: CF.nt_xent(a, b, temperature=0.3), lambda a, b: loop_nt_xent(a, b, 0.3)),
    "clip": (lambda a, b: CF.clip_loss(a, b, logit_scale=12.0), lambda a, b: open_clip_reference(a, b, 12.0)),
    "siglip": (
        lambda a, b: CF.siglip_loss(a, b, logit_scale=8.0, logit_bias=-5.0),
        lambda a, b: loop_siglip(a, b, 8.0, -5.0),
    ),
    "dcl": (
        lambda a, b: CF.dcl(a, b, temperature=0.2),
        lambda a, b: (yeh_dcl(a, b, 0.2) + yeh_dcl(b, a, 0.2)) / 2,
    ),
    "dclw": (
        lambda a, b: CF.dclw(a, b, temperature=0.2, sigma=0.5),
        lambda a, b: (yeh_dcl(a, b, 0.2, yeh_dclw_weight(0.5)) + yeh_dcl(b, a, 0.2, yeh_dclw_weight(0.5))) / 2,
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-9), (torch.float32, 2e-5)])
def test_pair_losses_match_reference(name, dtype, tol):
    ours_fn, ref_fn = CASES[name]
    z_a = sphere(13, 6, seed=11, dtype=dtype, grad=True)
    z_b = near(z_a, 0.6).to(dtype).requires_grad_()
    ours = ours_fn(z_a, z_b)
    ref = ref_fn(z_a, z_b)
    torch.testing.assert_close(ours, ref.to(ours.dtype), rtol=tol, atol=tol)
    for g, r in zip(torch.autograd.grad(ours, (z_a, z_b)), torch.autograd.grad(ref, (z_a, z_b))):
        torch.testing.assert_close(g, r, rtol=tol, atol=tol)


def test_info_nce_with_extra_negatives_matches_loop():
    z_a, negatives = sphere(9, 5, seed=12, grad=True), sphere(17, 5, seed=13, grad=True)
    z_b = near(z_a, 0.5).requires_grad_()
    ours = CF.info_nce(z_a, z_b, temperature=0.1, negatives=negatives)
    ref = loop_info_nce(z_a, z_b, 0.1, negatives)
    torch.testing.assert_close(ours, ref)
    for g, r in zip(torch.autograd.grad(ours, (z_a, z_b, negatives)), torch.autograd.grad(ref, (z_a, z_b, negatives))):
        torch.testing.assert_close(g, r)


@pytest.mark.parametrize("views", [2, 3])
def test_supcon_matches_the_authors_code(views):
    features = F.normalize(torch.randn(12, views, 8, dtype=torch.float64), dim=2).requires_grad_()
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 0, 4, 4, 1])
    ours = CF.supcon(features, labels, temperature=0.07, base_temperature=0.07)
    ref = hobbitlong_supcon(features, labels, temperature=0.07, base_temperature=0.07)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(ours, features)[0], torch.autograd.grad(ref, features)[0])
    # the base-temperature rescaling of the reference
    scaled = CF.supcon(features, labels, temperature=0.1, base_temperature=0.07)
    torch.testing.assert_close(scaled, hobbitlong_supcon(features, labels, 0.1, 0.07))


def test_supcon_flat_layout_and_singleton_labels():
    z = sphere(10, 6, seed=14, grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 3, 3])  # label 2 has no positive: excluded from the mean
    got = CF.supcon(z, labels, temperature=0.2)
    # loop from Khosla et al. Eq. 2 over the anchors that have positives
    terms = []
    for i in range(10):
        positives = [p for p in range(10) if p != i and labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(torch.exp(z[i] @ z[k] / 0.2) for k in range(10) if k != i)
        terms.append(-sum(torch.log(torch.exp(z[i] @ z[p] / 0.2) / denominator) for p in positives) / len(positives))
    ref = torch.stack(terms).mean()
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(torch.autograd.grad(got, z)[0], torch.autograd.grad(ref, z)[0])


def test_supcon_with_instance_labels_is_nt_xent():
    z_a = sphere(11, 7, seed=15)
    z_b = near(z_a, 0.4)
    stacked = torch.stack([z_a, z_b], dim=1)  # (B, 2, D)
    torch.testing.assert_close(
        CF.supcon(stacked, torch.arange(11), temperature=0.3), CF.nt_xent(z_a, z_b, temperature=0.3)
    )


# --- closed forms ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 7])
def test_identical_embeddings_give_log_counts(n):
    same = torch.ones(n, 4, dtype=torch.float64) / 2
    assert CF.nt_xent(same, same).item() == pytest.approx(math.log(2 * n - 1))
    assert CF.info_nce(same, same).item() == pytest.approx(math.log(n))
    assert CF.clip_loss(same, same).item() == pytest.approx(math.log(n))
    if n > 1:
        assert CF.dcl(same, same).item() == pytest.approx(math.log(2 * n - 2))
        assert CF.supcon(torch.cat([same, same]), torch.zeros(2 * n, dtype=torch.long)).item() == pytest.approx(
            math.log(2 * n - 1)
        )


def test_siglip_hand_computed():
    # orthonormal pairs: the diagonal scores t, the rest 0, so the loss is softplus(-(t+b)) + (N-1) softplus(b)
    n, t, b = 5, 10.0, -10.0
    z = torch.eye(n, dtype=torch.float64)
    expected = F.softplus(torch.tensor(-(t + b))).item() + (n - 1) * F.softplus(torch.tensor(b)).item()
    assert CF.siglip_loss(z, z, logit_scale=t, logit_bias=b).item() == pytest.approx(expected)


def test_perfect_separation_drives_losses_to_zero():
    z = torch.eye(6, dtype=torch.float64)
    assert CF.info_nce(z, z, temperature=0.01).item() < 1e-30
    assert CF.nt_xent(z, z, temperature=0.01).item() < 1e-30


def test_gradcheck_float64():
    z_a = sphere(5, 3, seed=16, grad=True)
    z_b = near(z_a, 0.5).requires_grad_()
    labels = torch.tensor([0, 1, 0, 1, 2])
    fns = [fn for fn, _ in CASES.values()] + [
        lambda a, b: CF.supcon(torch.cat([a, b]), labels.repeat(2)),
        lambda a, b: CF.align_uniform(a, b, alpha=1.5, t=3.0),
    ]
    for fn in fns:
        assert torch.autograd.gradcheck(fn, (z_a, z_b))
    # the queue is detached: check the gradient with respect to the queries only
    queue = sphere(7, 3, seed=19)
    assert torch.autograd.gradcheck(lambda q: CF.uniformity_with_queue(q, queue, t=2.0), (z_a,))


def test_learnable_scale_gets_a_gradient():
    z_a, z_b = sphere(8, 4, seed=17), sphere(8, 4, seed=18)
    scale = torch.tensor(10.0, dtype=torch.float64, requires_grad=True)
    bias = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    g_scale, g_bias = torch.autograd.grad(CF.siglip_loss(z_a, z_b, logit_scale=scale, logit_bias=bias), (scale, bias))
    assert g_scale.abs() > 0 and g_bias.abs() > 0
    assert torch.autograd.grad(CF.clip_loss(z_a, z_b, logit_scale=scale), scale)[0].abs() > 0


def test_bad_input_is_explained():
    z = sphere(4, 3)
    with pytest.raises(ValueError, match="temperature must be"):
        CF.info_nce(z, z, temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be"):
        CF.nt_xent(z, z, temperature=-1)
    with pytest.raises(ValueError, match="same shape"):
        CF.clip_loss(z, z[:2])
    with pytest.raises(ValueError, match="same embedding dimension"):
        CF.info_nce(z, z, negatives=sphere(3, 5))
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        CF.supcon(z, torch.tensor([0, 1]))
    with pytest.raises(TypeError, match="integer class ids"):
        CF.supcon(z, torch.tensor([0.0, 1.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="every label occurs once"):
        CF.supcon(z, torch.arange(4))
    with pytest.raises(ValueError, match="no negative"):
        CF.dcl(z[:1], z[:1])
    with pytest.raises(ValueError, match="logit_scale must be"):
        CF.clip_loss(z, z, logit_scale=-2.0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        CF.siglip_loss(z, z, logit_bias=torch.tensor(math.inf))
    with pytest.raises(ValueError, match="NaN or Inf"):
        CF.nt_xent(z, torch.full_like(z, math.nan))
