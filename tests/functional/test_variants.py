"""EuCLIP, Kernel-InfoNCE and HN-NCE against loops from their papers' equations, the authors' code and closed forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import near, sphere
from references.euclip import eify_euclip
from references.hn_nce import hard_negative_nce

import contrasphere
from contrasphere import functional as CF


def _raw(n, d, seed, scale=0.6):
    """Embeddings off the sphere (EuCLIP uses them as given), as a leaf tensor."""
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(n, d, generator=g, dtype=torch.float64)).requires_grad_()


def _value_and_grads(fn, inputs):
    value = fn(*inputs)
    return (value.detach(), *torch.autograd.grad(value, inputs))


def assert_same(fn, want_fn, inputs, tol=1e-10):
    for got, want in zip(_value_and_grads(fn, inputs), _value_and_grads(want_fn, inputs)):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


# --- loops written from the equations ----------------------------------------------------------------------------
def loop_euclip(a, b, s):
    n = a.shape[0]
    total = 0.0
    for i in range(n):
        rows = torch.stack([-s * ((a[i] - b[j]) ** 2).sum() for j in range(n)])
        cols = torch.stack([-s * ((a[j] - b[i]) ** 2).sum() for j in range(n)])
        total = total - (rows[i] - torch.logsumexp(rows, 0)) - (cols[i] - torch.logsumexp(cols, 0))
    return total / (2 * n)


def loop_kernel(a, b, kernel, tau, tau_l):
    def k(x, y):
        dist = torch.sqrt(((x - y) ** 2).sum())
        gaussian, laplacian = torch.exp(-(dist**2) / tau), torch.exp(-dist / tau_l)
        return {"gaussian": gaussian, "laplacian": laplacian, "mixture": gaussian + laplacian}[kernel]

    z = torch.cat([a, b])
    n2 = z.shape[0]
    terms = []
    for i in range(n2):
        p = (i + n2 // 2) % n2
        denominator = sum(k(z[i], z[m]) for m in range(n2) if m != i)
        terms.append(-torch.log(k(z[i], z[p]) / denominator))
    return torch.stack(terms).mean()


def loop_hn_nce(a, b, s, alpha, beta1, beta2):
    n = a.shape[0]

    def direction(x, y, beta):
        total = 0.0
        for i in range(n):
            logits = [s * (x[i] @ y[j]) for j in range(n)]
            neg = [j for j in range(n) if j != i]
            norm = sum(torch.exp(beta * logits[k]) for k in neg)
            weights = {j: (n - 1) * torch.exp(beta * logits[j]) / norm for j in neg}
            denominator = alpha * torch.exp(logits[i]) + sum(weights[j] * torch.exp(logits[j]) for j in neg)
            total = total - torch.log(torch.exp(logits[i]) / denominator)
        return total / n

    return (direction(a, b, beta1) + direction(b, a, beta2)) / 2


# --- Euclidean CLIP -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("s", [0.3, 1.0, 2.5])
def test_euclidean_clip_is_the_loop_and_the_authors_code(s):
    a, b = _raw(9, 5, seed=1), _raw(9, 5, seed=2)
    scale = torch.tensor(s, dtype=torch.float64, requires_grad=True)
    inputs = (a, b, scale)
    fn = lambda x, y, t: CF.euclidean_clip(x, y, logit_scale=t)  # noqa: E731
    assert_same(fn, loop_euclip, inputs)
    assert_same(fn, eify_euclip, inputs)


@pytest.mark.parametrize("s", [0.5, 7.0])
def test_euclidean_clip_on_unit_vectors_is_clip_at_twice_the_scale(s):
    # -s ||a - b||^2 = 2 s <a, b> - 2 s for unit vectors, and the constant cancels in each softmax
    # (the gradients agree on the sphere: through the normalisation, whose Jacobian keeps the tangent part)
    a, b = _raw(12, 6, seed=3), _raw(12, 6, seed=30)
    assert_same(
        lambda x, y: CF.euclidean_clip(F.normalize(x, dim=1), F.normalize(y, dim=1), logit_scale=s),
        lambda x, y: CF.clip_loss(F.normalize(x, dim=1), F.normalize(y, dim=1), logit_scale=2 * s),
        (a, b),
    )


@pytest.mark.parametrize("block", [1, 4, 7])
def test_euclidean_clip_tiles_equal_dense_with_a_learnable_scale(block):
    a, b = _raw(13, 5, seed=4), _raw(13, 5, seed=5)
    scale = torch.tensor(1.7, dtype=torch.float64, requires_grad=True)
    assert_same(
        lambda x, y, t: CF.euclidean_clip(x, y, logit_scale=t, block_size=block),
        lambda x, y, t: CF.euclidean_clip(x, y, logit_scale=t, block_size=0),
        (a, b, scale),
    )


def test_euclidean_clip_module_learns_its_scale_and_checks_it():
    loss = contrasphere.create_loss("euclidean_clip")
    assert loss.logit_scale.item() == pytest.approx(1.0)  # the authors' --init-logit-scale 0
    a, b = _raw(6, 4, seed=6).float(), _raw(6, 4, seed=7).float()
    loss(z_a=a, z_b=b).backward()
    assert loss.log_logit_scale.grad is not None and loss.log_logit_scale.grad != 0
    with torch.no_grad():
        loss.log_logit_scale.fill_(10.0)
    assert loss.logit_scale.item() == pytest.approx(100.0)
    frozen = contrasphere.create_loss("euclidean_clip", learnable=False)
    assert list(frozen.parameters()) == []
    capped = contrasphere.create_loss("euclidean_clip", init_logit_scale=5.0, max_logit_scale=2.0)
    assert capped.logit_scale.item() == pytest.approx(2.0)  # a start above the clamp starts at the clamp
    with pytest.raises(ValueError, match="init_logit_scale must be a finite number > 0"):
        contrasphere.create_loss("euclidean_clip", init_logit_scale=0.0)
    with pytest.raises(ValueError, match="logit_scale must be a finite number > 0"):
        CF.euclidean_clip(a, b, logit_scale=-1.0)


# --- Kernel-InfoNCE -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kernel", ["gaussian", "laplacian", "mixture"])
def test_kernel_info_nce_is_the_loop(kernel):
    a, b = _raw(7, 4, seed=8), _raw(7, 4, seed=9)
    assert_same(
        lambda x, y: CF.kernel_info_nce(x, y, kernel=kernel, temperature=0.7, laplacian_temperature=0.4),
        lambda x, y: loop_kernel(x, y, kernel, 0.7, 0.4),
        (a, b),
    )


@pytest.mark.parametrize("tau", [0.2, 1.0])
def test_gaussian_kernel_on_unit_vectors_is_nt_xent_at_half_the_temperature(tau):
    # exp(-||x - y||^2 / tau) = exp(-2 / tau) exp(<x, y> / (tau / 2)) for unit vectors
    a, b = _raw(11, 6, seed=10), _raw(11, 6, seed=31)
    assert_same(
        lambda x, y: CF.kernel_info_nce(F.normalize(x, dim=1), F.normalize(y, dim=1), temperature=tau),
        lambda x, y: CF.nt_xent(F.normalize(x, dim=1), F.normalize(y, dim=1), temperature=tau / 2),
        (a, b),
    )


@pytest.mark.parametrize("block", [1, 5, 8])
def test_gaussian_kernel_tiles_equal_dense(block):
    a, b = _raw(11, 5, seed=11), _raw(11, 5, seed=12)
    assert_same(
        lambda x, y: CF.kernel_info_nce(x, y, temperature=0.9, block_size=block),
        lambda x, y: CF.kernel_info_nce(x, y, temperature=0.9, block_size=0),
        (a, b),
    )


@pytest.mark.parametrize("kernel", ["laplacian", "mixture"])
def test_laplacian_kernel_has_a_finite_gradient_at_zero_distance(kernel):
    a = sphere(5, 3, seed=13, grad=True)
    value = CF.kernel_info_nce(a, a, kernel=kernel)  # every positive at distance 0, where ||.|| has a kink
    (grad,) = torch.autograd.grad(value, a)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


def test_kernel_info_nce_rejects_bad_hyperparameters():
    a, b = sphere(4, 3), sphere(4, 3, seed=1)
    with pytest.raises(ValueError, match="kernel must be one of 'gaussian', 'laplacian', 'mixture', got 'rbf'"):
        CF.kernel_info_nce(a, b, kernel="rbf")
    with pytest.raises(ValueError, match="laplacian_temperature must be a finite number > 0"):
        contrasphere.create_loss("kernel_info_nce", laplacian_temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be at least"):
        CF.kernel_info_nce(a, b, temperature=1e-30)


# --- HN-NCE ---------------------------------------------------------------------------------------------------------
HN_CASES = [(1.0, 0.5, 0.5), (1.0, 0.0, 0.0), (0.0, 1.0, 0.25), (0.3, 2.0, 0.0)]


@pytest.mark.parametrize(("alpha", "beta1", "beta2"), HN_CASES)
def test_hn_nce_is_the_loop_and_the_reference(alpha, beta1, beta2):
    a = sphere(8, 5, seed=14, grad=True)
    b = near(a, 0.7).requires_grad_()
    scale = torch.tensor(4.0, dtype=torch.float64, requires_grad=True)
    fn = lambda x, y, t: CF.hn_nce(x, y, logit_scale=t, alpha=alpha, beta1=beta1, beta2=beta2)  # noqa: E731
    assert_same(fn, lambda x, y, t: loop_hn_nce(x, y, t, alpha, beta1, beta2), (a, b, scale))
    # the reference adds the two directions; we average them
    assert_same(fn, lambda x, y, t: hard_negative_nce(x, y, 1 / t, alpha, beta1, beta2) / 2, (a, b, scale))


def test_hn_nce_without_hardness_is_clip():
    a = sphere(10, 6, seed=15, grad=True)
    b = near(a, 0.5).requires_grad_()
    assert_same(
        lambda x, y: CF.hn_nce(x, y, logit_scale=9.0, alpha=1.0, beta1=0.0, beta2=0.0),
        lambda x, y: CF.clip_loss(x, y, logit_scale=9.0),
        (a, b),
    )


def test_hn_nce_weights_harder_negatives_more():
    # beta > 0 puts more weight on the high-scoring negatives: the loss grows with beta (weights average to 1 and
    # correlate with e^{l_ij}), and beta = 0 leaves every negative its weight 1
    a = sphere(10, 6, seed=16)
    b = near(a, 0.8)
    values = [CF.hn_nce(a, b, logit_scale=5.0, beta1=beta, beta2=beta).item() for beta in (0.0, 0.5, 1.0, 2.0)]
    assert values == sorted(values) and values[0] < values[-1]


@pytest.mark.parametrize("block", [1, 3, 8])
def test_hn_nce_tiles_equal_dense(block):
    a = sphere(13, 5, seed=17, grad=True)
    b = near(a, 0.5).requires_grad_()
    scale = torch.tensor(6.0, dtype=torch.float64, requires_grad=True)
    assert_same(
        lambda x, y, t: CF.hn_nce(x, y, logit_scale=t, alpha=0.5, beta1=0.7, beta2=0.3, block_size=block),
        lambda x, y, t: CF.hn_nce(x, y, logit_scale=t, alpha=0.5, beta1=0.7, beta2=0.3, block_size=0),
        (a, b, scale),
    )


def test_hn_nce_rejects_bad_input_and_hyperparameters():
    a, b = sphere(4, 3), sphere(4, 3, seed=1)
    with pytest.raises(ValueError, match="beta1 must be a finite number >= 0"):
        CF.hn_nce(a, b, beta1=-0.5)
    with pytest.raises(ValueError, match="alpha must be a finite number >= 0"):
        contrasphere.create_loss("hn_nce", alpha=math.inf)
    with pytest.raises(ValueError, match="beta2 must be a finite number >= 0"):
        contrasphere.create_loss("hn_nce", beta2=-1.0)
    with pytest.raises(ValueError, match="init_temperature must be at least 1e-20"):
        contrasphere.create_loss("hn_nce", init_temperature=1e-30)
    assert contrasphere.create_loss("hn_nce", init_temperature=0.001).logit_scale.item() == pytest.approx(100.0)
    with pytest.raises(ValueError, match="at least 2 are needed"):
        CF.hn_nce(a[:1], b[:1])


def test_hn_nce_module_defaults():
    loss = contrasphere.create_loss("hn_nce")
    assert loss.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-6)
    assert (loss.alpha, loss.beta1, loss.beta2) == (1.0, 0.5, 0.5)


# --- half precision -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "fn",
    [
        lambda a, b, bs: CF.euclidean_clip(a, b, logit_scale=3.0, block_size=bs),
        lambda a, b, bs: CF.kernel_info_nce(a, b, temperature=0.1, block_size=bs),
        lambda a, b, bs: CF.kernel_info_nce(a, b, kernel="mixture", block_size=bs),
        lambda a, b, bs: CF.hn_nce(a, b, logit_scale=50.0, block_size=bs),
    ],
    ids=["euclidean_clip", "gaussian", "mixture", "hn_nce"],
)
def test_half_precision_is_finite_and_reduced_in_float32(dtype, fn):
    a = sphere(40, 16, seed=18, dtype=torch.float32)
    b = near(a, 0.4)
    low_a, low_b = a.to(dtype).requires_grad_(), b.to(dtype).requires_grad_()
    for bs in (0, 16):
        value = fn(low_a, low_b, bs)
        assert value.dtype == torch.float32 and torch.isfinite(value)
        torch.testing.assert_close(value, fn(low_a.detach().float(), low_b.detach().float(), 0), rtol=3e-2, atol=3e-2)
        grads = torch.autograd.grad(value, (low_a, low_b))
        assert all(g.dtype == dtype and torch.isfinite(g.float()).all() for g in grads)


@pytest.mark.parametrize("temperature", [0.01, 0.2, 1.0])
def test_gte_info_nce_matches_sentence_transformers(temperature):
    from references.gte import gte_loss

    z_a = sphere(13, 7, seed=31, dtype=torch.float64, grad=True)
    z_b = near(z_a, 0.5, seed=32).requires_grad_()
    got = CF.gte_info_nce(z_a, z_b, temperature=temperature)
    want = gte_loss(z_a, z_b, temperature=temperature)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(torch.autograd.grad(got, (z_a, z_b)), torch.autograd.grad(want, (z_a, z_b))):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)


def test_gte_info_nce_closed_form_for_orthogonal_pairs():
    """Queries and documents all orthogonal but each pair identical: Z = 2 e^{1/tau} + 4 (N - 1) e^0."""
    n, tau = 5, 0.5
    z = torch.eye(n, dtype=torch.float64)
    want = -math.log(math.exp(1 / tau) / (2 * math.exp(1 / tau) + 4 * (n - 1)))
    assert float(CF.gte_info_nce(z, z, temperature=tau)) == pytest.approx(want, rel=1e-12)
    with pytest.raises(ValueError, match="temperature"):
        CF.gte_info_nce(z, z, temperature=-1.0)
