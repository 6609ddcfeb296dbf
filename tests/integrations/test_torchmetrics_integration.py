"""contrasphere.integrations.torchmetrics: each Metric equals contrasphere.metrics on the union of its batches."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import near, sphere

pytest.importorskip("torchmetrics", reason="needs the torchmetrics extra: pip install 'contrasphere[torchmetrics]'")

import torchmetrics  # noqa: E402

from contrasphere import metrics  # noqa: E402
from contrasphere.errors import InputError, InputTypeError  # noqa: E402
from contrasphere.integrations.torchmetrics import Alignment, EffectiveRank, ModalityGap, Uniformity  # noqa: E402

SPLITS = (7, 16, 1, 26)  # uneven batches, one of a single row


def _raw(n: int, d: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Off-sphere features (norms around 3) with some structure, so that no metric sits at a trivial value."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.linspace(3.0, 0.2, d)
    return (torch.randn(n, d, generator=g, dtype=torch.float64) * scales + 0.5).to(dtype)


def _feed(metric, *tensors):
    for parts in zip(*(t.split(list(SPLITS)) for t in tensors)):
        metric.update(*parts)
    return metric.compute()


def test_the_module_does_not_shadow_the_library():
    assert torchmetrics.__name__ == "torchmetrics" and issubclass(Uniformity, torchmetrics.Metric)


@pytest.mark.parametrize("alpha", [2.0, 1.0, 0.5])
@pytest.mark.parametrize("normalize", [True, False])
def test_alignment_equals_the_core(alpha, normalize):
    a, b = (_raw(50, 8, 0), _raw(50, 8, 1)) if normalize else (sphere(50, 8, dtype=torch.float32), None)
    b = b if normalize else near(a, 0.3)
    value = _feed(Alignment(alpha=alpha, normalize=normalize), a, b)
    assert value.dtype == torch.float64 and value.ndim == 0
    assert float(value) == pytest.approx(metrics.alignment(a, b, alpha=alpha, normalize=normalize), rel=1e-12)


def test_alignment_with_pairs_indexes_each_batch():
    z = _raw(20, 6, 2)
    pairs = torch.tensor([[0, 1], [2, 3], [4, 9]])
    m = Alignment()
    m.update(z[:10], pairs=pairs)
    m.update(z[10:], pairs=pairs[:2])
    everything = torch.cat([pairs, pairs[:2] + 10])
    assert float(m.compute()) == pytest.approx(metrics.alignment(z, pairs=everything), rel=1e-12)


@pytest.mark.parametrize(
    "kwargs", [{}, {"t": 0.5}, {"t": 3.0, "max_points": 20, "seed": 3}, {"normalize": False}], ids=str
)
def test_uniformity_equals_the_core_on_the_union(kwargs):
    z = sphere(50, 8, dtype=torch.float32) if kwargs.get("normalize") is False else _raw(50, 8, 3)
    value = float(_feed(Uniformity(**kwargs), z))
    assert value == metrics.uniformity(z, **kwargs)
    # all pairs of the union count, which a mean over batches would not give
    per_batch = sum(metrics.uniformity(p, **kwargs) for p in z.split(25)) / 2
    assert abs(value - per_batch) > 1e-3


@pytest.mark.parametrize("normalize", [True, False])
def test_effective_rank_equals_the_core(normalize):
    z = _raw(50, 8, 4) if normalize else sphere(50, 8, dtype=torch.float32)
    assert float(_feed(EffectiveRank(normalize=normalize), z)) == metrics.effective_rank(z, normalize=normalize)


def test_effective_rank_of_a_collapsed_set():
    z = _raw(50, 2, 5) @ torch.randn(2, 8, generator=torch.Generator().manual_seed(0))  # rank 2 in R^8
    value = float(_feed(EffectiveRank(), z))
    assert value == metrics.effective_rank(z) and value < 2.0 + 1e-9


@pytest.mark.parametrize("normalize", [True, False])
def test_modality_gap_equals_the_core(normalize):
    a = _raw(50, 8, 6) if normalize else sphere(50, 8, seed=6, dtype=torch.float32)
    b = _raw(50, 8, 7) + 2.0 if normalize else near(a + 0.5, 0.1)
    value = float(_feed(ModalityGap(normalize=normalize), a, b))
    assert value == metrics.modality_gap(a, b, normalize=normalize) and value > 0.1
    m = ModalityGap()  # the two modalities need not have the same number of rows
    m.update(a[:10], b[:3])
    m.update(a[10:20], b[3:4])
    assert float(m.compute()) == metrics.modality_gap(a[:20], b[:4])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_dtypes_give_the_core_value(dtype):
    z = _raw(50, 8, 8, dtype)
    assert float(_feed(Uniformity(), z)) == metrics.uniformity(z)
    assert float(_feed(EffectiveRank(), z)) == metrics.effective_rank(z)


def test_forward_gives_the_batch_value_and_accumulates():
    z = _raw(30, 8, 9)
    m = Uniformity()
    assert float(m(z[:12])) == metrics.uniformity(z[:12])
    assert float(m(z[12:])) == metrics.uniformity(z[12:])
    assert float(m.compute()) == metrics.uniformity(z)
    m.reset()
    m.update(z[:5])
    assert float(m.compute()) == metrics.uniformity(z[:5])


def test_merged_states_give_the_union():
    """Two metrics' states merged (what a process group's sync does) measure the union, an empty one included."""
    a, b = _raw(30, 8, 10), _raw(30, 8, 11)
    cases = [
        (Uniformity, metrics.uniformity, (a,)),
        (EffectiveRank, metrics.effective_rank, (a,)),
        (ModalityGap, metrics.modality_gap, (a, b)),
        (Alignment, metrics.alignment, (a, b)),
    ]
    for cls, core, args in cases:
        first, second, empty = cls(), cls(), cls()
        first.update(*(t[:11] for t in args))
        second.update(*(t[11:] for t in args))
        first.merge_state(second)
        first.merge_state(empty)
        assert float(first.compute()) == pytest.approx(core(*args), rel=1e-12), cls.__name__


@pytest.mark.filterwarnings("ignore:The ``compute`` method of metric")  # torchmetrics' own note, before ours
def test_bad_input_says_what_to_do():
    with pytest.raises(InputError, match="call update"):
        Uniformity().compute()
    with pytest.raises(InputError, match="no pairs"):
        Alignment().compute()
    with pytest.raises(InputError, match=r"shape \(B, D\)"):
        Uniformity().update(torch.ones(5))
    with pytest.raises(InputTypeError, match="torch.Tensor"):
        EffectiveRank().update([[1.0, 2.0]])
    m = Uniformity()
    m.update(_raw(5, 8, 0))
    with pytest.raises(InputError, match="dimension 4 but the earlier updates"):
        m.update(_raw(5, 4, 0))
    with pytest.raises(InputError, match="all-zero row"):
        EffectiveRank().update(torch.zeros(3, 4))
    with pytest.raises(InputError, match="normalize=True"):
        Uniformity(normalize=False).update(_raw(5, 8, 0))
    with pytest.raises(InputError, match="same embedding dimension"):
        ModalityGap().update(_raw(5, 8, 0), _raw(5, 4, 0))
    with pytest.raises(InputError, match="same shape"):
        Alignment().update(_raw(5, 8, 0), _raw(4, 8, 0))
    with pytest.raises(InputError, match="NaN"):
        Uniformity().update(torch.full((3, 4), float("nan")))
    with pytest.raises(InputError, match="t must be"):
        Uniformity(t=-1.0)
    with pytest.raises(InputError, match="max_points"):
        Uniformity(max_points=1)
    with pytest.raises(InputError, match="alpha"):
        Alignment(alpha=0)
    with pytest.raises(InputTypeError, match="normalize"):
        EffectiveRank(normalize="yes")


# --- under a real process group: two processes, uneven shares, one process without any embeddings ---

SHARES = {0: (0, 23), 1: (23, 23)}  # rank 1 sees no row at all (its states stay empty)
GAP_SHARES = {0: (0, 9), 1: (9, 30)}


def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        a, b = _raw(30, 8, 12), _raw(30, 8, 13)
        lo, hi = SHARES[rank]
        glo, ghi = GAP_SHARES[rank]
        u, r, al, gap = Uniformity(t=1.5), EffectiveRank(), Alignment(alpha=1.0), ModalityGap()
        if hi > lo:
            u.update(a[lo:hi])
            r.update(a[lo:hi])
        al.update(a[glo:ghi], b[glo:ghi])
        gap.update(a[glo:ghi], b[glo:ghi])
        result = {k: float(m.compute()) for k, m in (("u", u), ("r", r), ("al", al), ("gap", gap))}
        with open(f"{out}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_compute_under_ddp_measures_the_union_of_all_ranks(tmp_path):
    # fork: the children inherit the imported modules (a spawn would import torchmetrics again, ~10 s)
    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="fork")
    a, b = _raw(30, 8, 12), _raw(30, 8, 13)
    expected = {
        "u": metrics.uniformity(a[:23], t=1.5),
        "r": metrics.effective_rank(a[:23]),
        "al": metrics.alignment(a, b, alpha=1.0),
        "gap": metrics.modality_gap(a, b),
    }
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got == pytest.approx(expected, rel=1e-12), rank
