"""Low precision where it is fast, and right: bfloat16 tiles only on devices with bfloat16 matrix units, float32
elsewhere (with one warning that says why), and a tiled bfloat16 loss as close to float64 as the dense one."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from contrasphere import functional as CF
from contrasphere.pairwise import _tiling
from contrasphere.train.loop import warn_emulated_precision

AVX2 = frozenset({"avx", "avx2", "fma"})
AVX512_BF16 = AVX2 | {"avx512f", "avx512_bf16"}


@pytest.fixture
def cpu_flags(monkeypatch):
    """Pretend to run on a CPU with the given /proc/cpuinfo flags (and forget earlier one-time warnings)."""

    def set_flags(flags: frozenset[str]) -> None:
        monkeypatch.setattr(_tiling, "_cpu_flags", lambda: flags)
        monkeypatch.setattr(_tiling, "_WARNED", set())

    return set_flags


def test_bf16_tiles_only_where_the_cpu_has_bf16_units(cpu_flags):
    x = torch.zeros(3, 2, dtype=torch.bfloat16)
    cpu_flags(AVX512_BF16)
    assert _tiling.native_low_precision(x.device, torch.bfloat16) and _tiling._mm_dtype(x) == torch.bfloat16
    cpu_flags(AVX2)
    assert not _tiling.native_low_precision(x.device, torch.bfloat16)
    with pytest.warns(RuntimeWarning, match="no native bfloat16 matrix units.*float32 instead"):
        assert _tiling._mm_dtype(x) == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        assert _tiling._mm_dtype(x) == torch.float32
    assert _tiling._mm_dtype(x.half()) == torch.float32  # float16 products are never faster on a CPU
    assert not _tiling.native_low_precision(x.device, torch.float32)
    assert _tiling.native_low_precision(torch.device("cuda"), torch.float16)


def test_train_precision_bf16_warns_on_a_cpu_without_bf16_units(cpu_flags):
    cpu = torch.device("cpu")
    cpu_flags(AVX2)
    with pytest.warns(RuntimeWarning, match="train.precision=bf16 makes this run slower.*train.precision=fp32"):
        assert warn_emulated_precision("bf16", cpu)
    cpu_flags(AVX512_BF16)
    assert not warn_emulated_precision("bf16", cpu)
    assert not warn_emulated_precision("fp32", cpu)
    assert not warn_emulated_precision("bf16", torch.device("cuda"))


@pytest.mark.parametrize("flags", [AVX512_BF16, AVX2], ids=["bf16-units", "no-bf16-units"])
@pytest.mark.parametrize("loss", ["info_nce", "clip_loss", "nt_xent"])
def test_tiled_bf16_is_as_close_to_float64_as_dense_bf16(loss, flags, cpu_flags):
    """On bf16 inputs (N = 300, D = 64, T = 0.07), the tiled loss's error against float64 of the float32 inputs is
    bounded by the dense path's: the scores are accumulated in float32 either way, and the positive term is the
    same inner product."""
    cpu_flags(flags)
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(300, 64, generator=g), dim=1)
    b = F.normalize(a + 0.3 * torch.randn(300, 64, generator=g), dim=1)
    fn = getattr(CF, loss)
    kw = {"logit_scale": 1 / 0.07} if loss == "clip_loss" else {"temperature": 0.07}
    exact = float(fn(a.double(), b.double(), **kw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        dense = float(fn(a.bfloat16(), b.bfloat16(), block_size=0, **kw))
        tiled = float(fn(a.bfloat16(), b.bfloat16(), block_size=64, **kw))
    dense_err, tiled_err = abs(dense - exact) / exact, abs(tiled - exact) / exact
    assert dense_err > 0  # the inputs' rounding is seen: the comparison is not vacuous
    assert tiled_err <= 1.5 * dense_err + 1e-4, (tiled_err, dense_err)
