"""Shared pieces of the engine: sizes, dtypes, and the generators that walk the tiles of a score matrix."""

from __future__ import annotations

import contextlib
import functools
import math
import warnings
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any, Literal

import torch
from torch import Tensor

DENSE_MAX_PAIRS = 1 << 22  # above ~4M pairs (a 2048 x 2048 matrix) the tiled path is used


ROW_BLOCK = 256


TILE_PAIRS = 1 << 21  # a tile holds at most this many scores (8 MB in float32)


SYM_BLOCK = 1024  # side of the square tiles of the symmetric and row-and-column reductions


def acc_dtype(x: Tensor) -> torch.dtype:
    """The dtype reductions over ``x`` accumulate in: float64 for float64, float32 for everything else."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@functools.cache
def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_low_precision(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``device`` multiplies ``dtype`` (bfloat16 or float16) matrices in hardware, faster than float32.

    True on CUDA. On a CPU, bfloat16 only where the processor has AVX512-BF16 or AMX (read from /proc/cpuinfo):
    without them PyTorch emulates the product, about 75 times slower than float32 (0.4 against 30-66 GFLOP/s on an
    AVX2 machine). float16 products on a CPU are never faster, so they are never used there.
    """
    if dtype not in (torch.bfloat16, torch.float16):
        return False
    if device.type == "cuda":
        return True
    if device.type != "cpu" or dtype != torch.bfloat16:
        return False
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


_WARNED: set[str] = set()


def warn_once(key: str, message: str) -> None:
    """``warnings.warn(message)`` the first time ``key`` is seen in this process."""
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


EMULATED_BF16 = (
    "this CPU has no native bfloat16 matrix units (no AVX512-BF16 or AMX; torch reports {cap}), so a bfloat16 "
    "matrix product runs emulated, about 75x slower than float32"
)


def _mm_dtype(x: Tensor) -> torch.dtype:
    """The dtype tiles are multiplied in: bfloat16 (float16 on CUDA) where the device multiplies it natively, else
    the accumulation dtype (with a one-time warning for bfloat16 on a CPU that would emulate it)."""
    if native_low_precision(x.device, x.dtype):
        return x.dtype
    if x.dtype == torch.bfloat16 and x.device.type == "cpu" and "bf16-tiles" not in _WARNED:
        cap = torch.backends.cpu.get_cpu_capability()
        warn_once(
            "bf16-tiles",
            EMULATED_BF16.format(cap=cap) + ": contrasphere computes the bfloat16 tiles in float32 instead (the same "
            "values, accumulated in float32 either way)",
        )
    return acc_dtype(x)


KernelChoice = Literal["auto", "triton", "torch"]
_kernels: list[KernelChoice] = ["auto"]


@contextlib.contextmanager
def kernels(choice: KernelChoice) -> Iterator[None]:
    """Choose the tiled passes' kernels inside the block: ``"auto"`` (fused Triton kernels for CUDA tensors when
    Triton is installed, PyTorch tiles elsewhere), ``"triton"`` (Triton for every device: on CPU tensors this needs
    ``TRITON_INTERPRET=1``, which is how the tests run the kernels without a GPU) or ``"torch"`` (the PyTorch tiles
    everywhere, the reference). float64 always takes the PyTorch tiles."""
    if choice not in ("auto", "triton", "torch"):
        raise ValueError(f"kernels must be 'auto', 'triton' or 'torch', got {choice!r}")
    _kernels.append(choice)
    try:
        yield
    finally:
        _kernels.pop()


@functools.cache
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton(x: Tensor, excluded: tuple[int, ...] | list[int] = (), m: int | None = None) -> bool:
    """Whether the tiled passes over ``x`` (against ``m`` columns) run the fused Triton kernels (see
    :func:`kernels`): not for float64, nor for more excluded diagonals than a launch takes (the PyTorch tiles
    take any number)."""
    choice = _kernels[-1]
    if choice == "torch" or x.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return False
    if choice == "auto" and not (x.device.type == "cuda" and _triton_available()):
        return False  # decided without importing Triton (its import adds ~150 MB and seconds)
    m = x.shape[0] if m is None else m
    return not excluded or bool(_triton().takes_offsets(tuple(excluded), x.shape[0], m))


def _triton() -> ModuleType:
    """The Triton kernels (imported on first use: the core imports with torch and numpy alone)."""
    from . import _triton as kernels_module

    return kernels_module


# On CUDA the fused kernels launch a handful of programs per pass where the dense path launches a dozen kernels
# and writes the N x M matrix several times; they take over from a 512 x 512 matrix on.
CUDA_DENSE_MAX_PAIRS = 1 << 18


def dense_max_pairs(device: torch.device | None) -> int:
    """The largest score matrix (in pairs) the automatic choice computes densely on ``device``."""
    if device is not None and device.type == "cuda":
        return CUDA_DENSE_MAX_PAIRS if _triton_available() else DENSE_MAX_PAIRS
    return DENSE_MAX_PAIRS


def use_tiles(n: int, m: int, block_size: int | None, device: torch.device | None = None) -> bool:
    """Whether a reduction over an ``n x m`` matrix on ``device`` runs tiled (see the module docstring for
    ``block_size``; None chooses by size and device: :func:`dense_max_pairs`)."""
    if block_size is None:
        return n * m > dense_max_pairs(device)
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 0:
        raise ValueError(f"block_size must be None (automatic), 0 (dense) or a positive row count, got {block_size!r}")
    return block_size > 0


def _blocks(n: int, m: int, block_size: int | None) -> tuple[int, int]:
    rows = ROW_BLOCK if not block_size else block_size
    cols = max(rows, TILE_PAIRS // rows) if not block_size else block_size
    return min(rows, n), min(cols, m)


def _as_scale(scale: Tensor | float, like: Tensor) -> Tensor:
    if isinstance(scale, Tensor):
        return scale.reshape(()).to(acc_dtype(like))
    return torch.tensor(float(scale), dtype=acc_dtype(like), device=like.device)


def _excluded(exclude_diagonal: bool, offsets: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sorted({0, *offsets} if exclude_diagonal else set(offsets)))


IdPair = tuple[Tensor, Tensor]
"""Sample ids of the rows and of the columns: a pair whose two ids are equal is left out of the reduction."""


def _id_pair(row_ids: Tensor | None, col_ids: Tensor | None, n: int, m: int) -> IdPair | None:
    """The ids of rows and columns as one pair, checked: both or neither, one integer id per row and column."""
    if row_ids is None and col_ids is None:
        return None
    if row_ids is None or col_ids is None:
        raise ValueError("row_ids and col_ids go together: pass both (the same tensor for a set against itself)")
    for ids, k, name in ((row_ids, n, "row_ids"), (col_ids, m, "col_ids")):
        if ids.shape != (k,) or ids.is_floating_point() or ids.dtype == torch.bool:
            raise ValueError(
                f"{name} must be {k} integer ids, shape ({k},); got {ids.dtype} of shape {tuple(ids.shape)}"
            )
    return row_ids, col_ids


def _mask_pairs_(scores: Tensor, excluded: tuple[int, ...], ids: IdPair | None) -> Tensor:
    """``scores`` with every left-out pair (an excluded offset ``j - i = k``, or equal ids) set to ``-inf``, in place.

    The dense paths call it on a matrix they have just made (whose producers keep no reference to it for their
    backward), so filling diagonals in place costs no ``N x M`` index or offset matrix and no copy.
    """
    n, m = scores.shape
    for k in excluded:
        if -n < k < m:
            scores.diagonal(k).fill_(-math.inf)
    if ids is not None:
        scores.masked_fill_(ids[0][:, None] == ids[1][None, :], -math.inf)
    return scores


def dense_logsumexp(scores: Tensor, dim: int, masked: bool = True) -> Tensor:
    r"""``torch.logsumexp(scores, dim)`` for the dense paths, from one fused softmax.

    ``torch.logsumexp`` runs an unfused ``exp`` over the matrix (on a CPU about as slow as a whole
    ``torch.softmax``) and, in the backward pass, makes three fresh ``N x M`` arrays (``scores - lse``, its
    ``exp``, the product with the gradient). Here the forward pass is one ``softmax`` ``p``, and
    :math:`\mathrm{lse} = \max s - \log \max p` (the largest probability is :math:`1 / \sum e^{s - \max s}
    \geq 1 / M`: it never underflows); ``p`` is saved in place of the scores and the backward pass is one product,
    ``d lse / d scores = p``. Where pairs were ``masked`` out, a slice whose every score is ``-inf`` gets ``-inf``
    and zero gradient. First-order only, as the tiled passes are: a second derivative raises (``torch.logsumexp``
    is the way for that).
    """
    out: Tensor = _DenseLogSumExp.apply(scores, dim, masked)
    return out


class _DenseLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, scores: Tensor, dim: int, masked: bool) -> Tensor:
        p = torch.softmax(scores, dim)
        top = scores.amax(dim)
        lse = top - p.amax(dim).log()
        empty = torch.isinf(top) if masked else None  # every pair left out: softmax is 0 / 0 there
        if empty is not None:
            lse = torch.where(empty, -math.inf, lse)
        ctx.save_for_backward(p, empty)
        ctx.dim = dim
        return lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        p, empty = ctx.saved_tensors
        weights = p * grad.unsqueeze(ctx.dim)
        if empty is not None:
            weights.masked_fill_(empty.unsqueeze(ctx.dim), 0.0)
        return weights, None, None


def _dense_scores(
    a: Tensor,
    b: Tensor,
    scale: Tensor | float,
    detached_scale: float,
    row_bias: Tensor | float | None = None,
    col_bias: Tensor | None = None,
) -> Tensor:
    """``scale * a @ b.T + detached_scale * sg(a @ b.T) + r_i + c_j`` in the accumulation dtype (no gradient
    through the second term); ``row_bias`` may be a scalar (added to every score).

    The scale goes on the ``(N, D)`` side and the biases ride in the matrix product as extra columns (``[a s, r,
    1] @ [b, 1, c].T``), so that no ``N x M`` pass is spent on them, forward or backward.
    """
    dtype = acc_dtype(a)
    a, b = a.to(dtype), b.to(dtype)
    if detached_scale:
        raw = a @ b.T
        scores = raw * scale + detached_scale * raw.detach()
        if row_bias is not None:
            scores = scores + (row_bias.to(dtype)[:, None] if isinstance(row_bias, Tensor) else row_bias)
        return scores if col_bias is None else scores + col_bias.to(dtype)
    left, right = [a * scale], [b]
    if row_bias is not None:
        r = row_bias.to(dtype) if isinstance(row_bias, Tensor) else torch.tensor(row_bias, dtype=dtype, device=a.device)
        left.append(r.expand(a.shape[0])[:, None])
        right.append(b.new_ones(b.shape[0], 1))
    if col_bias is not None:
        left.append(a.new_ones(a.shape[0], 1))
        right.append(col_bias.to(dtype).expand(b.shape[0])[:, None])
    if len(left) == 1:
        return left[0] @ b.T
    return torch.cat(left, 1) @ torch.cat(right, 1).T


def _tile_scores(
    out: Tensor,
    a_r: Tensor,
    b_c: Tensor,
    scale: Tensor,
    bias_c: Tensor | None,
    diagonals: tuple[int, ...],
    same: Tensor | None = None,
) -> Tensor:
    """Scores of one tile into ``out`` (float32/64): ``scale * a_r @ b_c.T + bias_c``, given diagonals and the
    pairs where ``same`` is true masked."""
    if a_r.dtype == out.dtype:
        torch.mm(a_r, b_c.T, out=out)
    else:
        out.copy_(a_r @ b_c.T)
    out.mul_(scale)
    if bias_c is not None:
        out.add_(bias_c)
    for offset in diagonals:
        out.diagonal(offset).fill_(-math.inf)
    if same is not None:
        out.masked_fill_(same, -math.inf)
    return out


def _diag(r0: int, r1: int, c0: int, c1: int, excluded: tuple[int, ...]) -> tuple[int, ...]:
    """The diagonals of tile rows r0:r1 x cols c0:c1 that hold excluded global pairs ``j - i == k``."""
    local = (k + r0 - c0 for k in excluded)
    return tuple(o for o in local if -(r1 - r0) < o < c1 - c0)


def _tiles(
    a: Tensor,
    b: Tensor,
    scale: Tensor,
    rows: int,
    cols: int,
    *,
    col_bias: Tensor | None = None,
    excluded: tuple[int, ...] = (),
    ids: IdPair | None = None,
) -> Iterator[tuple[int, int, int, int, Tensor]]:
    """Yield ``(r0, r1, c0, c1, tile)`` over every ``rows x cols`` tile of ``scale <a_i, b_j> + col_bias_j``.

    Excluded diagonals and pairs of equal ``ids`` are masked; ``col_bias`` may be ``(M,)`` or a scalar tensor. Each
    tile is written into one reused buffer (float32/64): consume it before asking for the next.
    """
    acc, mm = acc_dtype(a), _mm_dtype(a)
    a_mm, b_mm = a.detach().to(mm), b.detach().to(mm)
    bias = None if col_bias is None else col_bias.detach().to(acc)
    n, m = a.shape[0], b.shape[0]
    buf = torch.empty(rows, cols, dtype=acc, device=a.device)
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        for c0 in range(0, m, cols):
            c1 = min(c0 + cols, m)
            bias_c = None if bias is None else bias if bias.ndim == 0 else bias[c0:c1]
            diagonals = _diag(r0, r1, c0, c1, excluded)
            same = None if ids is None else ids[0][r0:r1, None] == ids[1][None, c0:c1]
            out = buf[: r1 - r0, : c1 - c0]
            yield r0, r1, c0, c1, _tile_scores(out, a_mm[r0:r1], b_mm[c0:c1], scale, bias_c, diagonals, same)


def _accumulate(grad_a: Tensor, grad_b: Tensor | None, u: Tensor, a: Tensor, b: Tensor, mm: torch.dtype) -> None:
    """``grad_a += u @ b`` and ``grad_b += u.T @ a`` (if given), with ``u`` multiplied in the tiles' dtype."""
    if u.dtype == mm:
        grad_a.addmm_(u, b)
        if grad_b is not None:
            grad_b.addmm_(u.T, a)
        return
    u_mm = u.to(mm)
    grad_a += u_mm @ b
    if grad_b is not None:
        grad_b += u_mm.T @ a


def _sym_tiles(
    z: Tensor, scale: Tensor, bias: Tensor | None, excluded: tuple[int, ...], side: int, ids: Tensor | None = None
) -> Iterator[tuple[int, int, int, int, Tensor]]:
    """Yield ``(i0, i1, j0, j1, tile)`` for the tiles on and above the diagonal of ``scale <z_i, z_j> + r_i + r_j``.

    Each tile is written into one reused buffer (float32/64), excluded diagonals and pairs of equal ``ids`` masked;
    consume it before the next.
    """
    acc, mm = acc_dtype(z), _mm_dtype(z)
    z_mm = z.detach().to(mm)
    r = None if bias is None else bias.detach().to(acc)
    n = z.shape[0]
    buf = torch.empty(side, side, dtype=acc, device=z.device)
    for i0 in range(0, n, side):
        i1 = min(i0 + side, n)
        for j0 in range(i0, n, side):
            j1 = min(j0 + side, n)
            same = None if ids is None else ids[i0:i1, None] == ids[None, j0:j1]
            out = buf[: i1 - i0, : j1 - j0]
            tile = _tile_scores(out, z_mm[i0:i1], z_mm[j0:j1], scale, None, _diag(i0, i1, j0, j1, excluded), same)
            if r is not None:
                tile.add_(r[i0:i1, None]).add_(r[None, j0:j1])
            yield i0, i1, j0, j1, tile


def _online_update(run_max: Tensor, run_sum: Tensor, tile_max: Tensor, exp_sum: Callable[[Tensor], Tensor]) -> None:
    """Merge one tile's maxima into running (max, sum) pairs in place; ``exp_sum(shift)`` sums exp(tile - shift)."""
    new_max = torch.maximum(run_max, tile_max)
    safe = torch.where(torch.isinf(new_max), 0.0, new_max)
    run_sum.mul_(torch.exp(run_max - safe)).add_(exp_sum(safe))
    run_max.copy_(new_max)


def _exp_sum(tile: Tensor, dim: int, shift: Tensor, *, out: Tensor | None = None) -> Tensor:
    """``exp(tile - shift).sum(dim)``, ``shift`` broadcast along ``dim``; in place in ``tile``, or into ``out``."""
    shift = shift.unsqueeze(dim)
    shifted = tile.sub_(shift) if out is None else torch.sub(tile, shift, out=out)
    return shifted.exp_().sum(dim)
