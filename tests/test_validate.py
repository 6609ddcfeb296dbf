"""The shared input checks of contrasphere._validate: the NaN/Inf check runs in chunks and reports as a whole."""

from __future__ import annotations

import math

import pytest
import torch

from contrasphere import _validate as check


def _message(z, name="z"):
    with pytest.raises(ValueError) as info:
        check.finite(z, name)
    return str(info.value)


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize(
    "shape", [(50, 13), (3, 200), (1, 999), (7,), (4, 5, 6)], ids=["rows", "long-rows", "one-row", "1d", "3d"]
)
def test_finite_checks_in_chunks_and_says_what_the_whole_check_said(monkeypatch, shape, chunk):
    z = torch.randn(shape)
    seen = []
    isfinite = torch.isfinite

    def spy(x):
        seen.append(x.numel())
        return isfinite(x)

    monkeypatch.setattr(torch, "isfinite", spy)
    monkeypatch.setattr(check, "FINITE_CHUNK", chunk)
    check.finite(z, "z")  # finite: one sum proves it (NaN and Inf would propagate into it), no mask at all
    assert seen == []
    flat = z.view(-1)
    flat[-1] = math.nan  # in the last chunk
    flat[0] = -math.inf  # and in the first
    chunked = _message(z)
    # a bad value: the exact check and the count, each over every element, and no mask larger than a chunk
    assert max(seen) <= max(chunk, 1) and sum(seen) == 2 * z.numel()
    monkeypatch.setattr(check, "FINITE_CHUNK", 10**12)
    assert (
        chunked
        == _message(z)
        == (
            f"z contains 2 NaN or Inf value(s) out of {z.numel()}; the encoder diverged or overflowed (in float16, try "
            "bfloat16 or a smaller learning rate) before the loss was called"
        )
    )


def test_finite_values_whose_sum_overflows_pass():
    z = torch.full((4, 3), 3e38)  # finite float32, but their sum is inf: the exact check decides
    check.finite(z, "z")
    z[1, 2] = math.inf
    with pytest.raises(ValueError, match="1 NaN or Inf"):
        check.finite(z, "z")


def test_finite_on_views_scalars_and_empty_tensors(monkeypatch):
    monkeypatch.setattr(check, "FINITE_CHUNK", 5)
    z = torch.randn(30, 8)
    z[29, 0] = math.nan
    assert "1 NaN or Inf value(s) out of 240" in _message(z.T)  # a transposed view: chunked along its own rows
    assert "1 NaN" in _message(z[:, ::2])
    check.finite(z[:29], "z")
    check.finite(torch.tensor(1.0), "scale")
    assert "1 NaN or Inf value(s) out of 1" in _message(torch.tensor(math.inf), "scale")
    check.finite(torch.empty(0, 4), "z")
