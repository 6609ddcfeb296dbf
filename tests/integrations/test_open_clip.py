"""contrasphere.integrations.openclip against open_clip's own ClipLoss and SigLipLoss, and exact under distribution.

open_clip's losses get the same inputs (float64 features with gradients, a learnable exponentiated logit scale and
bias) and must give the same values and gradients, dense and tiled, with ``output_dict`` too. Two gloo processes
with uneven batches (5 and 8 rows) must give, after DistributedDataParallel-style gradient averaging, the gradients
of the single-process loss on the global batch, whatever open_clip's distribution flags say.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from conftest import run_forked_ranks

from contrasphere.distributed import leave
from contrasphere.integrations.openclip import ClipLoss, SigLipLoss


@pytest.fixture(scope="module")
def open_clip_loss():
    """open_clip's loss module (imported here, not at module level, so that the spawned ranks need not import it)."""
    return pytest.importorskip("open_clip.loss", reason="the open-clip extra: pip install 'contrasphere[open-clip]'")


def _inputs(n=12, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    text = F.normalize(image + 0.8 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    log_scale = torch.tensor(2.3, dtype=torch.float64)  # open_clip's parameters: log scale, raw bias
    bias = torch.tensor(-4.0, dtype=torch.float64)
    return image, text, log_scale, bias


def _run(loss, image, text, log_scale, bias, *, with_bias, output_dict):
    leaves = [t.clone().requires_grad_() for t in (image, text, log_scale, bias)]
    args = [leaves[0], leaves[1], leaves[2].exp()] + ([leaves[3]] if with_bias else [])
    out = loss(*args, output_dict=output_dict)
    value = out["contrastive_loss"] if output_dict else out
    if output_dict:
        assert isinstance(out, dict) and list(out) == ["contrastive_loss"]
    value.backward()
    return value.detach(), [leaf.grad for leaf in leaves[: 4 if with_bias else 3]]


def _assert_same(ours, theirs, *, with_bias, output_dict=False, inputs=None):
    inputs = inputs or _inputs()
    value, grads = _run(ours, *inputs, with_bias=with_bias, output_dict=output_dict)
    ref_value, ref_grads = _run(theirs, *inputs, with_bias=with_bias, output_dict=output_dict)
    assert value.item() == pytest.approx(ref_value.item(), rel=1e-12)
    for g, want in zip(grads, ref_grads):
        torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-13)
        assert float(want.abs().max()) > 1e-6  # a real gradient, not zeros on both sides


@pytest.mark.parametrize("block_size", [None, 0, 5])
@pytest.mark.parametrize("output_dict", [False, True])
def test_clip_loss_is_open_clips(open_clip_loss, block_size, output_dict):
    _assert_same(ClipLoss(block_size=block_size), open_clip_loss.ClipLoss(), with_bias=False, output_dict=output_dict)


def test_clip_loss_flags_and_bias_change_nothing_on_one_process(open_clip_loss):
    ours = ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True)
    theirs = open_clip_loss.ClipLoss(local_loss=True, gather_with_grad=True, cache_labels=True)
    _assert_same(ours, theirs, with_bias=False)
    _assert_same(ours, theirs, with_bias=False)  # the second call reads open_clip's cached labels
    # a logit bias moves every logit alike: no softmax sees it (open_clip adds it, to the same effect)
    image, text, log_scale, _ = _inputs()
    value = ours(image, text, log_scale.exp(), logit_bias=torch.tensor(3.0, dtype=torch.float64))
    assert value.item() == pytest.approx(theirs(image, text, log_scale.exp()).item(), rel=1e-12)


@pytest.mark.parametrize("block_size", [None, 0, 5])
@pytest.mark.parametrize("output_dict", [False, True])
def test_siglip_loss_is_open_clips(open_clip_loss, block_size, output_dict):
    ours = SigLipLoss(block_size=block_size)
    _assert_same(ours, open_clip_loss.SigLipLoss(), with_bias=True, output_dict=output_dict)


def test_losses_agree_at_a_larger_batch_in_float32(open_clip_loss):
    """A batch larger than the automatic dense limit's tile in float32: the tiled engine against their dense one."""
    g = torch.Generator().manual_seed(3)
    image = F.normalize(torch.randn(300, 32, generator=g), dim=1)
    text = F.normalize(image + torch.randn(300, 32, generator=g), dim=1)
    scale, bias = torch.tensor(30.0), torch.tensor(-8.0)
    for ours, theirs, extra in (
        (ClipLoss(block_size=64), open_clip_loss.ClipLoss(), ()),
        (SigLipLoss(block_size=64), open_clip_loss.SigLipLoss(), (bias,)),
    ):
        a, b = image.clone().requires_grad_(), text.clone().requires_grad_()
        value = ours(a, b, scale, *extra)
        value.backward()
        a2, b2 = image.clone().requires_grad_(), text.clone().requires_grad_()
        ref = theirs(a2, b2, scale, *extra)
        ref.backward()
        assert value.item() == pytest.approx(ref.item(), rel=1e-5)
        torch.testing.assert_close(a.grad, a2.grad, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(b.grad, b2.grad, rtol=1e-4, atol=1e-7)


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="Horovod"):
        ClipLoss(use_horovod=True)
    with pytest.raises(ValueError, match="0 <= rank < world_size"):
        ClipLoss(rank=2, world_size=2)
    with pytest.raises(ValueError, match="dist_impl must be one of bidir, shift, reduce, gather"):
        SigLipLoss(dist_impl="ring")
    with pytest.raises(ValueError, match="block_size"):
        SigLipLoss(block_size=-1)
    image, text, log_scale, bias = _inputs()
    with pytest.raises(ValueError, match="no torch.distributed process group"):
        ClipLoss(rank=0, world_size=2)(image, text, log_scale.exp())
    with pytest.raises(ValueError, match="logit_scale"):
        ClipLoss()(image, text, torch.tensor(-1.0, dtype=torch.float64) * torch.ones(2))
    with pytest.raises(ValueError, match="same shape|shape"):
        SigLipLoss()(image, text[:-1], log_scale.exp(), bias)


# -- distributed: two gloo processes, uneven batches ----------------------------------------------------------------

SIZES = [5, 8]
D_IN, D_OUT = 6, 4


def _data():
    g = torch.Generator().manual_seed(0)
    n = sum(SIZES)
    x_img = torch.randn(n, D_IN, generator=g, dtype=torch.float64)
    x_txt = x_img + 0.5 * torch.randn(n, D_IN, generator=g, dtype=torch.float64)
    return x_img, x_txt


def _towers():
    torch.manual_seed(1)
    towers = torch.nn.ModuleDict({"image": torch.nn.Linear(D_IN, D_OUT), "text": torch.nn.Linear(D_IN, D_OUT)}).double()
    towers.log_scale = torch.nn.Parameter(torch.tensor(1.5, dtype=torch.float64))
    towers.bias = torch.nn.Parameter(torch.tensor(-2.0, dtype=torch.float64))
    return towers


def _step(towers, loss, x_img, x_txt, siglip):
    image = F.normalize(towers["image"](x_img), dim=1)
    text = F.normalize(towers["text"](x_txt), dim=1)
    extra = (towers.bias,) if siglip else ()
    value = loss(image, text, towers.log_scale.exp(), *extra)
    value.backward()
    return value.detach()


CASES = [
    ("clip", {}),
    ("clip", {"local_loss": True}),
    ("clip", {"gather_with_grad": True, "block_size": 3}),
    ("siglip", {}),
    ("siglip", {"dist_impl": "shift", "block_size": 3}),
]


def _worker(rank, world, init_file, out_dir):
    torch.set_num_threads(1)  # two processes on two cores: no oversubscribed thread pools
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x_img, x_txt = _data()
    start = sum(SIZES[:rank])
    mine = slice(start, start + SIZES[rank])
    results = {}
    for i, (kind, flags) in enumerate(CASES):
        towers = _towers()
        loss = (ClipLoss if kind == "clip" else SigLipLoss)(rank=rank, world_size=world, **flags)
        value = _step(towers, loss, x_img[mine], x_txt[mine], kind == "siglip")
        grads = []
        for p in towers.parameters():  # what DistributedDataParallel does: average the gradients over the ranks
            g = torch.zeros_like(p) if p.grad is None else p.grad.clone()  # CLIP has no bias
            dist.all_reduce(g)
            grads.append(g / world)
        results[i] = {"loss": value.item(), "grads": grads}
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    leave(destroy=True)  # a barrier first: no rank tears its connections down while another still uses them


@pytest.mark.slow
def test_two_uneven_processes_give_the_global_batch_loss_and_gradients(tmp_path):
    run_forked_ranks(_worker, 2, str(tmp_path / "init"), str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    x_img, x_txt = _data()
    for i, (kind, flags) in enumerate(CASES):
        towers = _towers()
        loss = ClipLoss(block_size=flags.get("block_size")) if kind == "clip" else SigLipLoss()
        value = _step(towers, loss, x_img, x_txt, kind == "siglip")
        for result in (r[i] for r in ranks):
            assert result["loss"] == pytest.approx(value.item(), rel=1e-12), (kind, flags)
            wanted = [torch.zeros_like(p) if p.grad is None else p.grad for p in towers.parameters()]
            assert len(result["grads"]) == len(wanted) == 6
            for got, want in zip(result["grads"], wanted):
                torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=f"{kind} {flags}")


def test_the_documentation_example_runs():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "integrations-text.md").read_text()
    chunks = page.split("## open_clip")[1].split("```")
    blocks = [c.removeprefix("python\n") for c in chunks[1::2] if c.startswith("python\n")]
    assert len(blocks) == 1
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "docs/integrations-text.md", "exec"), namespace)
    assert namespace["logit_scale"].grad is not None and namespace["siglip"].ndim == 0
