"""MatryoshkaLoss: the weighted sum over nested prefixes, for every registered loss, and with GatherLoss."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import make_loss, near, sphere
from torch.nn.parallel import DistributedDataParallel

import contrasphere
from contrasphere.distributed import leave
from contrasphere.losses import GatherLoss, MatryoshkaLoss, loss_spec
from contrasphere.losses.matryoshka import EMBEDDING_ROLES

D = 16
DIMS = (16, 8, 3)
WEIGHTS = (1.0, 0.5, 2.0)


def _inputs(name: str, *, n: int = 12, d: int = D) -> dict[str, torch.Tensor]:
    z_a = sphere(n, d, seed=31, grad=True)
    z_b = near(z_a, 0.5).requires_grad_()
    by_role = {
        "z_a": z_a,
        "z_b": z_b,
        "z": torch.cat([z_a, z_b]),
        "labels": torch.arange(2 * n) % (n // 3),
        "q": z_a,
        "k": z_b,
        "queue": sphere(3 * n, d, seed=32),
        "views": torch.stack([z_a, z_b, near(z_a, 0.7, seed=33)]),
        "modalities": torch.stack([z_a, z_b, near(z_a, 0.7, seed=33)]),
        "mix_index": torch.arange(n).roll(3),
        "mix_lambda": torch.linspace(0.5, 1.0, n, dtype=torch.float64),
        "index": torch.arange(n) * 7,
        "prior": torch.linspace(-1, 1, 2 * n, dtype=torch.float64).reshape(n, 2).sin(),
    }
    spec = loss_spec(name)
    # each embedding input a leaf of its own (a queue is shared state, mixing weights and priors are data)
    differentiable = EMBEDDING_ROLES - set(spec.shared)
    return {
        role: by_role[role].detach().requires_grad_() if role in differentiable else by_role[role]
        for role in spec.inputs
    }


def _explicit(loss_fn, kw, dims, weights, normalize=True):
    """The sum written out: the loss of each prefix, weighted."""
    total = 0.0
    for d, w in zip(dims, weights):
        cut = {}
        for k, v in kw.items():
            if k in EMBEDDING_ROLES:
                v = v[..., :d]
                v = F.normalize(v, dim=-1) if normalize else v
            cut[k] = v
        total = total + w * loss_fn(**cut)
    return total


# SwAV's prototypes, AMCL's temperature network and the cross-entropy classifier have the embeddings' full
# dimension: a prefix cannot meet them
DIMENSION_BOUND = {"swav", "amcl", "supervised_ce"}
WRAPPABLE = [name for name in contrasphere.list_losses() if name not in DIMENSION_BOUND]


@pytest.mark.parametrize("name", WRAPPABLE)
def test_matryoshka_is_the_weighted_sum_over_prefixes_for_every_loss(name):
    pristine = make_loss(name, D).double()
    kw = _inputs(name)
    wrapped, plain = copy.deepcopy(pristine), copy.deepcopy(pristine)  # iSogCLR's state advances at each call
    torch.manual_seed(3)  # the same draws (MoCHi, feature transformation, SIGReg) in the same order
    got = MatryoshkaLoss(wrapped, DIMS, WEIGHTS)(**kw)
    torch.manual_seed(3)
    want = _explicit(plain, kw, DIMS, WEIGHTS)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    leaves = [v for v in kw.values() if v.requires_grad]
    got_grads = torch.autograd.grad(got, leaves, allow_unused=True)
    for g, w in zip(got_grads, torch.autograd.grad(want, leaves, allow_unused=True)):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["nt_xent", "clip", "supcon"])
@pytest.mark.parametrize("normalize", [True, False])
def test_named_losses_values_and_gradients(name, normalize):
    loss = make_loss(name, D).double()
    kw = _inputs(name)
    matryoshka = MatryoshkaLoss(loss, dims=(16, 12, 4), weights=(1.0, 0.3, 0.7), normalize=normalize)
    got = matryoshka(**kw)
    want = _explicit(loss, kw, (16, 12, 4), (1.0, 0.3, 0.7), normalize)
    tensors = [v for v in kw.values() if v.requires_grad] + list(loss.parameters())
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(torch.autograd.grad(got, tensors), torch.autograd.grad(want, tensors)):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)
    if name == "clip":  # one learnable scale, shared by every prefix: its gradient is the sum over prefixes
        assert list(matryoshka.parameters()) == list(loss.parameters())
        (scale_grad,) = torch.autograd.grad(matryoshka(**kw), [loss.log_logit_scale])
        per_prefix = [
            torch.autograd.grad(w * _explicit(loss, kw, (d,), (1.0,), normalize), [loss.log_logit_scale])[0]
            for d, w in zip((16, 12, 4), (1.0, 0.3, 0.7))
        ]
        torch.testing.assert_close(scale_grad, sum(per_prefix), rtol=1e-12, atol=1e-12)


def test_supcon_with_stacked_views_cuts_the_last_dimension():
    loss = contrasphere.create_loss("supcon").double()
    z = torch.stack([sphere(9, D, seed=34), near(sphere(9, D, seed=34), 0.3)], dim=1)  # (B, V, D)
    labels = torch.arange(9) % 3
    got = MatryoshkaLoss(loss, (8, 2))(z=z, labels=labels)
    want = sum(loss(z=F.normalize(z[..., :d], dim=-1), labels=labels) for d in (8, 2))
    torch.testing.assert_close(got, want)


def test_the_defaults_are_sentence_transformers_and_too_large_a_dim_is_refused():
    m = MatryoshkaLoss(contrasphere.create_loss("nt_xent"))
    assert m.dims == (768, 512, 256, 128, 64) and m.weights == (1.0,) * 5 and m.normalize
    z = sphere(6, 300, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"dims \[768, 512\] exceed the embedding dimension of z_a \(300"):
        m(z_a=z, z_b=z)


def test_bad_arguments_are_explained():
    loss = contrasphere.create_loss("nt_xent")
    with pytest.raises(TypeError, match="non-empty sequence"):
        MatryoshkaLoss(loss, dims=())
    with pytest.raises(TypeError, match="non-empty sequence"):
        MatryoshkaLoss(loss, dims=64)
    with pytest.raises(ValueError, match="each of dims must be an integer >= 1"):
        MatryoshkaLoss(loss, dims=(8, 0))
    with pytest.raises(ValueError, match="one number per dim"):
        MatryoshkaLoss(loss, dims=(8, 4), weights=(1.0,))
    with pytest.raises(ValueError, match="each of weights must be a finite number >= 0"):
        MatryoshkaLoss(loss, dims=(8, 4), weights=(1.0, -1.0))
    with pytest.raises(TypeError, match="not a registered loss"):
        MatryoshkaLoss(torch.nn.MSELoss(), dims=(4,))


def test_half_precision_inputs():
    loss = contrasphere.create_loss("clip")
    for dtype in (torch.float16, torch.bfloat16):
        a = sphere(10, D, dtype=torch.float32).to(dtype).requires_grad_()
        b = near(sphere(10, D, dtype=torch.float32), 0.4).to(dtype).requires_grad_()
        value = MatryoshkaLoss(loss, (16, 4))(z_a=a, z_b=b)
        assert value.dtype == torch.float32 and torch.isfinite(value)
        grads = torch.autograd.grad(value, (a, b))
        assert all(g.dtype == dtype and torch.isfinite(g.float()).all() for g in grads)


@pytest.mark.parametrize("name", ["clip", "supcon", "moco"])
def test_either_order_with_gather_loss_is_the_same_without_a_process_group(name):
    loss = make_loss(name, D).double()
    kw = _inputs(name)
    inside = MatryoshkaLoss(GatherLoss(loss), DIMS, WEIGHTS)
    plain = MatryoshkaLoss(loss, DIMS, WEIGHTS)
    outside = GatherLoss(plain, spec=plain.spec)
    want = plain(**kw)
    for value in (inside(**kw), outside(**kw)):
        torch.testing.assert_close(value, want, rtol=0, atol=0)


# --- two processes ------------------------------------------------------------------------------------------------
SIZES = [5, 8]


def _data():
    g = torch.Generator().manual_seed(0)
    n = sum(SIZES)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    return x, x + 0.3 * torch.randn(n, 6, generator=g, dtype=torch.float64)


def _model():
    torch.manual_seed(1)
    return torch.nn.Linear(6, 8, dtype=torch.float64)


def _step(model, loss_fn, x_a, x_b):
    n = x_a.shape[0]
    z = model(torch.cat([x_a, x_b]))  # raw embeddings: MatryoshkaLoss normalises each prefix
    loss = loss_fn(z_a=z[:n], z_b=z[n:])
    loss.backward()
    return loss.item()


def _make(order, loss):
    if order == "gather_inside":
        return MatryoshkaLoss(GatherLoss(loss), (8, 5, 2), (1.0, 0.5, 0.25))
    m = MatryoshkaLoss(loss, (8, 5, 2), (1.0, 0.5, 0.25))
    return GatherLoss(m, spec=m.spec)


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)  # two processes on two cores: no oversubscribed thread pools
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x_a, x_b = _data()
    start = sum(SIZES[:rank])
    mine = slice(start, start + SIZES[rank])
    results = {}
    for order in ("gather_inside", "gather_outside"):
        model = DistributedDataParallel(_model())
        loss = contrasphere.create_loss("clip").double()
        value = _step(model, _make(order, loss), x_a[mine], x_b[mine])
        results[order] = (value, [p.grad.clone() for p in model.module.parameters()], loss.log_logit_scale.grad)
        del model  # no DDP reducer outlives the process group
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    leave(destroy=True)  # a barrier first: no rank tears its connections down while another still uses them


@pytest.mark.slow
def test_two_processes_match_one_in_either_order(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    x_a, x_b = _data()
    model = _model()
    loss = contrasphere.create_loss("clip").double()
    value = _step(model, MatryoshkaLoss(loss, (8, 5, 2), (1.0, 0.5, 0.25)), x_a, x_b)
    grads = [p.grad for p in model.parameters()]
    for r in range(2):
        got = torch.load(tmp_path / f"rank{r}.pt", weights_only=False)
        for order in ("gather_inside", "gather_outside"):
            got_value, got_grads, scale_grad = got[order]
            assert got_value == pytest.approx(value, rel=1e-12)
            for g, want in zip(got_grads, grads):
                torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-12)
            # the loss's own scale is not under DDP: each rank holds the full gradient of the global loss
            torch.testing.assert_close(scale_grad, loss.log_logit_scale.grad, rtol=1e-10, atol=1e-12)


def test_wrappers_find_each_others_spec_in_either_order():
    inner = contrasphere.create_loss("supcon")
    m = MatryoshkaLoss(inner, dims=(8, 4))
    assert GatherLoss(m).spec is m.spec is loss_spec("supcon")
    assert MatryoshkaLoss(GatherLoss(inner), dims=(8, 4)).spec is loss_spec("supcon")
