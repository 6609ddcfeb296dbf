"""Distributed parity: 2 and 4 CPU processes (gloo) with uneven batches give the single-process loss and gradients.

Every registered loss runs through :class:`GatherLoss` in its default mode (each rank computes its share of the
tiles), on 2 ranks (5 and 8 rows) and on 4 ranks (1, 6, 3 and 4 rows: a rank with a single row), dense and tiled
at block sizes no share divides; the full-matrix mode is checked on 2 ranks too.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import make_loss
from torch.nn.parallel import DistributedDataParallel

import contrasphere
from contrasphere.distributed import all_gather_with_grad, leave
from contrasphere.gradcache import grad_cache_backward
from contrasphere.losses import GatherLoss, loss_spec

SIZES = [5, 8]  # rows per rank: uneven on purpose
SIZES4 = [1, 6, 3, 4]  # four ranks, one of them with a single row
D_IN, D_OUT = 6, 4
TILED = [("nt_xent", 4), ("clip", 3), ("supcon", 5), ("siglip", 3), ("uniformity", 4), ("hard_negative", 5)]
CASES = [(name, None) for name in contrasphere.list_losses()] + TILED
# false negatives by sample id: the ids are gathered with the rows (the labels serve, three rows per id)
CASES += [(name, "ids") for name in contrasphere.list_losses() if loss_spec(name).takes_ids]
FULL = [("nt_xent", None), ("clip", None), ("siglip", None), ("supcon", 5), ("uniformity", None)]  # mode="full"
RING = [(name, None) for name in ("info_nce", "nt_xent", "clip", "siglip")] + [
    ("nt_xent", 4),
    ("clip", 3),
    ("siglip", 2),
]


def _data(sizes=SIZES):
    g = torch.Generator().manual_seed(0)
    n = sum(sizes)
    x_a = torch.randn(n, D_IN, generator=g, dtype=torch.float64)
    x_b = x_a + 0.3 * torch.randn(n, D_IN, generator=g, dtype=torch.float64)
    return x_a, x_b, torch.arange(n) % 3


def _model():
    torch.manual_seed(1)
    return torch.nn.Linear(D_IN, D_OUT, dtype=torch.float64)


def _loss(name, block):
    torch.manual_seed(2)  # SwAV's prototypes
    return make_loss(name, D_OUT, **({"block_size": block} if isinstance(block, int) else {})).double()


def _loss_inputs(name, z_a, z_b, labels, blocks, start):
    queue = F.normalize(torch.linspace(-1, 1, 7 * D_OUT, dtype=torch.float64).reshape(7, D_OUT).sin(), dim=1)
    by_role = {
        "z_a": z_a,
        "z_b": z_b,
        "z": torch.cat([z_a, z_b]),
        "labels": labels.repeat(2),
        "q": z_a,
        "k": z_b,
        "queue": queue,
        "views": torch.stack([z_a, z_b, z_a.flip(1)]),
        "modalities": torch.stack([z_a, z_b, z_a.flip(1)]),
        # each rank mixes within its own rows: reversed blocks (the whole batch is one block per rank)
        "mix_index": torch.cat([torch.arange(s).flip(0) + sum(blocks[:i]) for i, s in enumerate(blocks)]),
        "mix_lambda": 0.75 + 0.2 * torch.tanh(z_a[:, 0].detach()),  # per sample, the same wherever computed
        "index": torch.arange(z_a.shape[0]) + start,  # sample ids: global row numbers
        "prior": torch.stack([labels.double(), z_a[:, 1].detach()], dim=1),  # per sample, the same anywhere
    }
    return {role: by_role[role] for role in loss_spec(name).inputs}


def _step(model, loss_fn, name, x_a, x_b, labels, blocks=tuple(SIZES), start=0, ids=False):
    n = x_a.shape[0]
    z = F.normalize(model(torch.cat([x_a, x_b])), dim=1)  # one forward: DDP wants one per backward
    inputs = _loss_inputs(name, z[:n], z[n:], labels, list(blocks), start)
    loss = loss_fn(**inputs, **({"ids": labels} if ids else {}))
    loss.backward()
    return loss.detach()


def _result(model, loss_module, loss):
    grads = [p.grad.clone() for p in model.parameters()] + [p.grad.clone() for p in loss_module.parameters()]
    return {"loss": loss.item(), "grads": grads}


def _worker(rank, world, init_file, out_dir, sizes=SIZES):
    torch.set_num_threads(1)  # several processes on two cores: no oversubscribed thread pools
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    x_a, x_b, labels = _data(sizes)
    start = sum(sizes[:rank])
    mine = slice(start, start + sizes[rank])
    results = {}
    runs = (
        [(c, "local") for c in CASES]
        + [(c, "ring") for c in RING]
        + ([(c, "full") for c in FULL] if world == 2 else [])
    )
    for (name, block), mode in runs:
        model = DistributedDataParallel(_model())
        loss_module = _loss(name, block)
        loss = _step(
            model, GatherLoss(loss_module, mode=mode), name, x_a[mine], x_b[mine], labels[mine], (sizes[rank],),
            start, ids=block == "ids",
        )  # fmt: skip
        results[(name, block, mode)] = _result(model.module, loss_module, loss)
        del model  # no DDP reducer outlives the process group
    if world != 2:
        torch.save(results, f"{out_dir}/rank{rank}.pt")
        leave(destroy=True)  # a barrier first: no rank tears its connections down while another still uses them
        return
    # gradient caching under DDP: chunks of 3 rows on each rank
    model = DistributedDataParallel(_model())
    loss_fn = GatherLoss(contrasphere.create_loss("nt_xent").double())
    loss = grad_cache_backward(model, loss_fn, (x_a[mine], x_b[mine]), chunk_size=3, embed=_embed_pair)
    results[("gradcache", None)] = _result(model.module, torch.nn.Module(), loss)
    # the raw gather: rows in rank order, offset of this rank's rows
    z = x_a[mine].clone().requires_grad_()
    z_all, offset = all_gather_with_grad(z)
    (z_all * torch.arange(z_all.shape[0], dtype=z_all.dtype)[:, None]).sum().backward()
    results["gather"] = {"z_all": z_all.detach(), "offset": offset, "grad": z.grad}
    del model
    torch.save(results, f"{out_dir}/rank{rank}.pt")
    leave(destroy=True)


def _embed_pair(model, x_a, x_b):
    n = x_a.shape[0]
    z = F.normalize(model(torch.cat([x_a, x_b])), dim=1)
    return {"z_a": z[:n], "z_b": z[n:]}


def _spawn(tmp_path_factory, sizes):
    tmp = tmp_path_factory.mktemp("dist")
    world = len(sizes)
    mp.spawn(_worker, args=(world, str(tmp / "init"), str(tmp), sizes), nprocs=world, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    return _spawn(tmp_path_factory, SIZES)


@pytest.fixture(scope="module")
def ranks4(tmp_path_factory):
    return _spawn(tmp_path_factory, SIZES4)


def _single(name, block, sizes):
    x_a, x_b, labels = _data(sizes)
    model = _model()
    loss_module = _loss(name, block)
    loss = _step(model, loss_module, name, x_a, x_b, labels, tuple(sizes), ids=block == "ids")
    return _result(model, loss_module, loss)


def _assert_matches(results, key, single):
    for r in results:
        got = r[key]
        assert got["loss"] == pytest.approx(single["loss"], rel=1e-12)
        for g, want in zip(got["grads"], single["grads"]):
            torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[f"{n}-block{b}" for n, b in CASES])
def test_two_processes_match_one(ranks, case):
    _assert_matches(ranks, (*case, "local"), _single(*case, SIZES))


@pytest.mark.slow
@pytest.mark.parametrize("case", FULL, ids=[f"{n}-block{b}" for n, b in FULL])
def test_two_processes_in_full_matrix_mode_match_one(ranks, case):
    _assert_matches(ranks, (*case, "full"), _single(*case, SIZES))


@pytest.mark.slow
@pytest.mark.parametrize("case", RING, ids=[f"{n}-block{b}" for n, b in RING])
@pytest.mark.parametrize("world", [2, 4])
def test_the_ring_on_two_and_four_processes_matches_one(ranks, ranks4, case, world):
    _assert_matches(ranks if world == 2 else ranks4, (*case, "ring"), _single(*case, SIZES if world == 2 else SIZES4))


def test_ring_mode_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="ring mode computes info_nce, nt_xent, clip, siglip"):
        GatherLoss(contrasphere.create_loss("supcon"), mode="ring")
    with pytest.raises(ValueError, match="mode must be"):
        GatherLoss(contrasphere.create_loss("clip"), mode="everything")
    z = torch.randn(4, 3)
    loss = contrasphere.create_loss("clip")
    assert torch.equal(GatherLoss(loss, mode="ring")(z_a=z, z_b=z), loss(z_a=z, z_b=z))  # one process: the loss


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[f"{n}-block{b}" for n, b in CASES])
def test_four_processes_one_with_a_single_row_match_one(ranks4, case):
    _assert_matches(ranks4, (*case, "local"), _single(*case, SIZES4))


@pytest.mark.slow
def test_gradient_caching_under_ddp_matches_one_process(ranks):
    x_a, x_b, labels = _data()
    model = _model()
    loss_module = contrasphere.create_loss("nt_xent").double()
    single = _result(model, loss_module, _step(model, loss_module, "nt_xent", x_a, x_b, labels))
    for r in ranks:
        assert r[("gradcache", None)]["loss"] == pytest.approx(single["loss"], rel=1e-12)
        for g, want in zip(r[("gradcache", None)]["grads"], single["grads"]):
            torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_all_gather_keeps_order_offsets_and_sums_gradients(ranks):
    x_a, _, _ = _data()
    for r, result in enumerate(ranks):
        gathered = result["gather"]
        torch.testing.assert_close(gathered["z_all"], x_a)
        assert gathered["offset"] == sum(SIZES[:r])
        # loss = sum_i i * z_i on both ranks: each rank's rows get the sum of both ranks' gradients, 2 * i
        rows = torch.arange(gathered["offset"], gathered["offset"] + SIZES[r], dtype=torch.float64)
        torch.testing.assert_close(gathered["grad"], 2 * rows[:, None].expand(-1, D_IN))


def test_without_a_process_group_gathering_is_the_identity():
    z = torch.randn(3, 2, requires_grad=True)
    z_all, offset = all_gather_with_grad(z)
    assert z_all is z and offset == 0
    loss = contrasphere.create_loss("nt_xent")
    assert torch.equal(GatherLoss(loss)(z_a=z, z_b=z), loss(z_a=z, z_b=z))
    with pytest.raises(TypeError, match="not a registered loss"):
        GatherLoss(torch.nn.MSELoss())


@pytest.mark.slow
def test_torchrun_training_matches_one_process(tmp_path):
    """End to end: the example trained by torchrun on 2 processes equals the 1-process run on the same batches."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "ddp_train.py"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    common = [str(script), "--loss", "clip", "--steps", "6", "--batch", "37"]
    one = subprocess.run(
        [sys.executable, *common, "--out", str(tmp_path / "one.pt")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert one.returncode == 0, one.stderr[-2000:]
    import socket

    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("localhost", 0))
        port = sock.getsockname()[1]
    # the multi-node launch (a c10d rendezvous endpoint), on one node, as the README shows it
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2"]
    launcher += ["--rdzv_backend", "c10d", "--rdzv_endpoint", f"localhost:{port}", "--rdzv_id", "contrasphere-test"]
    # this test failed twice in about 30 runs on the 2-core machine, cause not captured (not reproduced since);
    # a launcher that exits non-zero (e.g. a local rendezvous hiccup) gets one relaunch; the checks are unchanged
    for _attempt in range(2):
        two = subprocess.run(
            [*launcher, *common, "--out", str(tmp_path / "two.pt")],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if two.returncode == 0:
            break
    assert two.returncode == 0, two.stderr[-2000:]
    assert one.stdout.splitlines()[-1] == two.stdout.splitlines()[-1]  # the same loss, printed to 6 decimals
    a, b = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-9, atol=1e-11)


def _mismatch_worker(rank, world, init_file, out_dir):
    import datetime
    import time

    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60)
    )
    outcome = {}
    z = torch.randn(3, 4 if rank == 0 else 5)  # rank 1 has another embedding size
    try:
        all_gather_with_grad(z)
        outcome["mismatch"] = "no error"
    except ValueError as err:
        outcome["mismatch"] = str(err)
    # a stalled rank: rank 1 never joins the gather; rank 0 must fail within the process group's timeout (a
    # group of its own with a 3 s timeout, so that a slow start of the processes cannot trip the first part)
    short = dist.new_group(timeout=datetime.timedelta(seconds=3))
    dist.barrier()
    began = time.perf_counter()
    if rank == 0:
        try:
            dist.all_gather([torch.zeros(1), torch.zeros(1)], torch.ones(1), group=short)
            outcome["stall"] = "no error"
        except RuntimeError as err:
            outcome["stall"] = type(err).__name__
        outcome["stall_seconds"] = time.perf_counter() - began
    else:
        time.sleep(8)
    torch.save(outcome, f"{out_dir}/rank{rank}.pt")
    # a process group with a timed-out operation can abort in its destructor ("terminate called without an active
    # exception"): leave without running it, the outcome is saved
    os._exit(0)


@pytest.mark.slow
def test_mismatched_shapes_and_a_stalled_rank_fail_clearly_and_in_bounded_time(tmp_path):
    mp.spawn(_mismatch_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for r in ranks:  # both ranks raise, with both layouts named
        assert "ranks disagree" in r["mismatch"] and "(3, 4)" in r["mismatch"] and "(3, 5)" in r["mismatch"]
    assert ranks[0]["stall"] != "no error"
    assert ranks[0]["stall_seconds"] < 7  # the 3 s timeout, not the 30-minute default
