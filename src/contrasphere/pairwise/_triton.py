"""Fused Triton kernels for the engine's reductions on GPUs: the tiles never leave the chip.

Every kernel computes tiles of the score matrix :math:`s_{ij} = \\sigma \\langle a_i, b_j\\rangle + r_i + c_j`
(``scale`` :math:`\\sigma` a 0-d tensor read inside the kernel; ``r`` and ``c`` optional ``(N,)`` and ``(M,)``
biases) with pairs left out where ``j - i`` is one of the ``excluded`` offsets or ``row_ids[i] == col_ids[j]``
(their score is ``-inf``), and reduces them where they are made:

- :func:`lse_forward`: ``_lse_kernel``, one program per block of rows, walks every block of columns with an
  online (flash-style) running maximum and sum and writes :math:`\\log \\sum_j e^{s_{ij}}` (``-inf`` for a row
  whose pairs are all left out). The column log-sum-exp is the same kernel on the transposed problem (``b``
  against ``a``, biases and ids swapped, offsets negated): a second launch parallel over column blocks that
  recomputes the tiles, with no atomics.
- :func:`lse_backward`: ``_grad_kernel`` recomputes each tile, turns it into the weights
  :math:`u_{ij} = g_i e^{s_{ij} - \\mathrm{lse}_i} + g'_j e^{s_{ij} - \\mathrm{lse}'_j}` and accumulates
  ``u @ b`` and the row sums of ``u`` for its block of rows (flash-attention-2 style). ``u.T @ a`` is the same
  kernel on the transposed problem, one program per block of columns. No ``N x M`` array is ever stored.
- :func:`sym_forward`, :func:`sym_backward`: the symmetric pass (:math:`s_{ij} = \\sigma\\langle z_i,
  z_j\\rangle + r_i + r_j`) through the same two kernels over the full matrix. Since ``s`` is symmetric,
  :math:`w_{ij} + w_{ji} = g_i e^{s_{ij} - \\mathrm{lse}_i} + g_j e^{s_{ij} - \\mathrm{lse}_j}` is the two-term
  weight of the row-and-column backward with ``lse' = lse`` and ``g' = g``: one launch of the row-block kernel
  gives the whole gradient (the column-block launch would repeat it).
- :func:`softplus_forward`, :func:`softplus_backward` (SigLIP): ``_softplus_kernel`` writes per-row sums of
  :math:`\\log(1 + e^{s_{ij}})` (``max(s, 0) + log1p(e^{-|s|})``, with an accurate ``log1p``), summed by torch;
  the backward is ``_grad_kernel`` with the weights :math:`u_{ij} = g \\cdot \\mathrm{sigmoid}(s_{ij})`.

The gradient of a block of rows is accumulated in float32 chunks of ``block_d`` columns of ``D``. When ``D`` fits
in one chunk the chunk stays in registers for the whole walk over the columns. A larger ``D`` has two strategies
(``large_d``): ``"accumulate"`` (the default for fp16/bf16) keeps one program per block of rows, computes each
tile once and adds ``u @ b`` chunk by chunk into the float32 output in global memory (a read-modify-write of a
block the program owns, hot in L2, ordered by a barrier between tiles); ``"recompute"`` (the default for float32,
whose FMA products spill registers in that loop) gives each ``(block of rows, chunk)`` its own program holding its
chunk in registers and recomputing the tiles once per chunk (``ceil(D / block_d)`` times the score products).
Which is faster at D = 768 is for the GPU to say.

Precision: products accumulate in float32 (``tl.dot``'s accumulator; float32 inputs use
``input_precision="ieee"``, no TF32, so they match a float32 dense reference to ~1e-5); every score, maximum, sum
and weight is float32 and no score is ever rounded to the input dtype. The one rounding is the FA-style cast of the
weights ``u`` to the input dtype for the second product (``u @ b`` on the matrix units): exact for float32, at
most a relative 2^-8 per weight for bfloat16 (whose range is float32's) and 2^-11 for float16, whose range is not:
there each row of the tile is first divided by its largest ``|u|`` (and the product multiplied back), so that small
gradients (a mean over 65k rows) are not lost to float16 subnormals. Outputs are float32; the gradients are
unscaled (the caller multiplies by ``scale`` and gets ``d/dscale`` as ``sum(a * ga)``).

No launcher reads a device value on the host: grids come from shapes, ``scale``, biases and the SigLIP bias and
incoming gradient are read inside the kernels. Excluded offsets are plain integer kernel arguments (at most
:data:`MAX_EXCLUDED` after dropping those outside the matrix; more views than that are better expressed with
ids), so no index tensor is built or copied per call.

Under the Triton interpreter (``TRITON_INTERPRET=1``, CPU tensors; Triton 3.8) bfloat16 ``tl.dot`` is emulated
wrongly (the bit patterns are multiplied as integers) and the float32-to-bfloat16 cast truncates, so there, and
only there (``UPCAST``), bfloat16 operands are widened to float32 before each product (the same exact products)
and ``u`` is rounded to bfloat16 by bit arithmetic, to nearest even as GPUs round.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import Tensor

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - the package's core runs without triton
    _AVAILABLE = False
else:
    _AVAILABLE = True

# Tile sizes for an H100/H200 class GPU (no autotuning: it would run every configuration under the interpreter).
# Chosen so that ptxas (sm_90, Triton 3.8) reports no register spills; float32 inputs (an FMA product, no TF32)
# take smaller tiles. Measured nowhere yet: tune on the GPU.
FWD_BLOCK_R = 128  # rows of a forward tile
FWD_BLOCK_C = 128  # columns of a forward tile (64 for float32)
FWD_BLOCK_K = 64  # the slice of D multiplied per step (32 for float32)
FWD_NUM_WARPS = 8
FWD_NUM_STAGES = 3
BWD_BLOCK_R = 64  # rows of a backward tile (each holds a float32 chunk of its gradient)
BWD_BLOCK_C = 64  # columns of a backward tile when the chunk stays in registers
BWD_ACCUMULATE_BLOCK_C = 128  # ... and when each tile's product goes to the output ("accumulate": its traffic
BWD_ACCUMULATE_BLOCK_D = 128  # per product halves with twice the columns), in chunks of this much of D
BWD_BLOCK_K = 64  # 32 for float32
BWD_MAX_BLOCK_D = 256  # the widest chunk of D a backward program holds in registers (128 for float32)
BWD_NUM_WARPS = 8
BWD_NUM_STAGES = 2
LARGE_D = "accumulate"  # strategy when D exceeds one chunk: "accumulate" (into the output) or "recompute"
LARGE_D_FP32 = "recompute"  # float32's FMA products spill registers in the read-modify-write loop
MAX_EXCLUDED = 8  # excluded offsets (inside the matrix) a launch takes as scalar arguments

_MODE_LSE = 0
_MODE_SOFTPLUS = 1
_EXC_NAMES = [f"e{k}" for k in range(MAX_EXCLUDED)]

# Kernel arguments are annotated ``tl.tensor`` (what Triton makes of every argument that is not ``tl.constexpr``):
# an annotation must name something Triton lets a kernel see, and mypy wants one.


def available() -> bool:
    """Whether Triton can be imported (the kernels need it; the rest of the package does not)."""
    return _AVAILABLE


def takes_offsets(excluded: tuple[int, ...], n: int, m: int) -> bool:
    """Whether the kernels take these excluded offsets for an ``n x m`` matrix (at most :data:`MAX_EXCLUDED` that
    name a pair; the launchers raise ``ValueError`` otherwise)."""
    return len({k for k in excluded if -n < k < m}) <= MAX_EXCLUDED


def _jit(fn: Callable[..., Any]) -> Any:
    return triton.jit(fn) if _AVAILABLE else fn


def _jit_kernel(fn: Callable[..., None]) -> Any:
    # the excluded offsets vary with the batch size: no specialisation on their value (no recompiles)
    return triton.jit(fn, do_not_specialize=_EXC_NAMES) if _AVAILABLE else fn


# ----------------------------------------------------------------------------------------------------------------
# Device functions


@_jit
def _mm(x: tl.tensor, y: tl.tensor, acc: tl.tensor, UPCAST: tl.constexpr) -> tl.tensor:
    """``acc + x @ y`` in float32 (``UPCAST``: widen both operands first, for the interpreter's bfloat16)."""
    if UPCAST:
        out = tl.dot(x.to(tl.float32), y.to(tl.float32), acc, input_precision="ieee")
    else:
        out = tl.dot(x, y, acc, input_precision="ieee")
    return out


@_jit
def _dot_tile(
    x_ptr: tl.tensor,
    y_ptr: tl.tensor,
    rows: tl.tensor,
    cols: tl.tensor,
    n_rows: tl.tensor,
    n_cols: tl.tensor,
    D: tl.tensor,
    stride_x: tl.tensor,
    stride_y: tl.tensor,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,
) -> tl.tensor:
    """``<x_i, y_j>`` for the tile ``rows x cols``, float32, looping over ``D`` in slices of ``BLOCK_K``."""
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    x_base = x_ptr + rows.to(tl.int64)[:, None] * stride_x
    y_base = y_ptr + cols.to(tl.int64)[:, None] * stride_y
    acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    for k0 in range(0, D, BLOCK_K):
        kk = k0 + tl.arange(0, BLOCK_K)
        k_ok = kk < D
        x = tl.load(x_base + kk[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        y = tl.load(y_base + kk[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
        acc = _mm(x, tl.trans(y), acc, UPCAST)
    return acc


@_jit
def _scores(
    x_ptr: tl.tensor,
    y_ptr: tl.tensor,
    scale: tl.tensor,
    rb_ptr: tl.tensor,
    cb_ptr: tl.tensor,
    rid_ptr: tl.tensor,
    cid_ptr: tl.tensor,
    rows: tl.tensor,
    cols: tl.tensor,
    n_rows: tl.tensor,
    n_cols: tl.tensor,
    D: tl.tensor,
    stride_x: tl.tensor,
    stride_y: tl.tensor,
    e0: tl.tensor,
    e1: tl.tensor,
    e2: tl.tensor,
    e3: tl.tensor,
    e4: tl.tensor,
    e5: tl.tensor,
    e6: tl.tensor,
    e7: tl.tensor,
    HAS_RB: tl.constexpr,
    HAS_CB: tl.constexpr,
    HAS_IDS: tl.constexpr,
    NUM_EXC: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,
) -> tl.tensor:
    """The tile of ``scale <x_i, y_j> + r_i + c_j`` with left-out pairs (and rows or columns outside) at -inf."""
    s = _dot_tile(x_ptr, y_ptr, rows, cols, n_rows, n_cols, D, stride_x, stride_y, BLOCK_R, BLOCK_C, BLOCK_K, UPCAST)
    s = s * scale
    row_ok = rows < n_rows
    col_ok = cols < n_cols
    if HAS_RB:
        s += tl.load(rb_ptr + rows, mask=row_ok, other=0.0)[:, None]
    if HAS_CB:
        s += tl.load(cb_ptr + cols, mask=col_ok, other=0.0)[None, :]
    keep = row_ok[:, None] & col_ok[None, :]
    diff = cols[None, :] - rows[:, None]
    if NUM_EXC > 0:
        keep = keep & (diff != e0)
    if NUM_EXC > 1:
        keep = keep & (diff != e1)
    if NUM_EXC > 2:
        keep = keep & (diff != e2)
    if NUM_EXC > 3:
        keep = keep & (diff != e3)
    if NUM_EXC > 4:
        keep = keep & (diff != e4)
    if NUM_EXC > 5:
        keep = keep & (diff != e5)
    if NUM_EXC > 6:
        keep = keep & (diff != e6)
    if NUM_EXC > 7:
        keep = keep & (diff != e7)
    if HAS_IDS:
        rid = tl.load(rid_ptr + rows, mask=row_ok, other=0)
        cid = tl.load(cid_ptr + cols, mask=col_ok, other=0)
        keep = keep & (rid[:, None] != cid[None, :])
    return tl.where(keep, s, float("-inf"))


@_jit
def _log1p(t: tl.tensor) -> tl.tensor:
    """``log(1 + t)`` to a few ulps for ``t >= 0`` (Goldberg: ``log(w) * t / (w - 1)`` with ``w = 1 + t``)."""
    w = 1.0 + t
    d = w - 1.0
    ratio = t / tl.where(d == 0.0, 1.0, d)
    return tl.where(d == 0.0, t, tl.log(w) * ratio)


@_jit
def _round_bf16(u: tl.tensor) -> tl.tensor:
    """``u`` rounded to the nearest bfloat16 (ties to even), kept in float32: the GPU's cast, which the interpreter
    replaces by a truncation."""
    bits = u.to(tl.uint32, bitcast=True)
    bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return bits.to(tl.float32, bitcast=True)


@_jit
def _add_product(
    acc: tl.tensor, u: tl.tensor, y: tl.tensor, UPCAST: tl.constexpr, NORMALISE: tl.constexpr
) -> tl.tensor:
    """``acc + u @ y`` with the float32 weights ``u`` rounded to ``y``'s dtype.

    ``NORMALISE`` (float16): each row of ``u`` is divided by its largest ``|u|`` before the rounding and the product
    multiplied back. ``UPCAST`` (bfloat16 under the interpreter): ``u`` rounded as a GPU does, both widened.
    """
    if NORMALISE:
        top = tl.max(tl.abs(u), 1)
        top = tl.where(top > 0.0, top, 1.0)
        part = tl.dot((u / top[:, None]).to(y.dtype), y, input_precision="ieee")
        out = acc + part * top[:, None]
    elif UPCAST:
        out = tl.dot(_round_bf16(u), y.to(tl.float32), acc, input_precision="ieee")
    else:
        out = tl.dot(u.to(y.dtype), y, acc, input_precision="ieee")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Kernels


@_jit_kernel
def _lse_kernel(
    x_ptr: tl.tensor,
    y_ptr: tl.tensor,
    scale_ptr: tl.tensor,
    rb_ptr: tl.tensor,
    cb_ptr: tl.tensor,
    rid_ptr: tl.tensor,
    cid_ptr: tl.tensor,
    out_ptr: tl.tensor,
    n_rows: tl.tensor,
    n_cols: tl.tensor,
    D: tl.tensor,
    stride_x: tl.tensor,
    stride_y: tl.tensor,
    e0: tl.tensor,
    e1: tl.tensor,
    e2: tl.tensor,
    e3: tl.tensor,
    e4: tl.tensor,
    e5: tl.tensor,
    e6: tl.tensor,
    e7: tl.tensor,
    HAS_RB: tl.constexpr,
    HAS_CB: tl.constexpr,
    HAS_IDS: tl.constexpr,
    NUM_EXC: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,
) -> None:
    """One block of rows: ``lse_i = log sum_j exp(s_ij)`` over every column, online maximum and sum."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    scale = tl.load(scale_ptr)
    run_max = tl.full([BLOCK_R], float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros([BLOCK_R], dtype=tl.float32)
    for c0 in range(0, n_cols, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        s = _scores(
            x_ptr, y_ptr, scale, rb_ptr, cb_ptr, rid_ptr, cid_ptr, rows, cols, n_rows, n_cols, D, stride_x, stride_y,
            e0, e1, e2, e3, e4, e5, e6, e7, HAS_RB, HAS_CB, HAS_IDS, NUM_EXC, BLOCK_R, BLOCK_C, BLOCK_K, UPCAST,
        )  # fmt: skip
        new_max = tl.maximum(run_max, tl.max(s, 1))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - shift) + tl.sum(tl.exp(s - shift[:, None]), 1)
        run_max = new_max
    found = run_sum > 0.0
    lse = tl.where(found, run_max + tl.log(tl.where(found, run_sum, 1.0)), float("-inf"))
    tl.store(out_ptr + rows, lse, mask=rows < n_rows)


@_jit
def _softplus_kernel(
    x_ptr: tl.tensor,
    y_ptr: tl.tensor,
    scale_ptr: tl.tensor,
    bias_ptr: tl.tensor,
    out_ptr: tl.tensor,
    n_rows: tl.tensor,
    n_cols: tl.tensor,
    D: tl.tensor,
    stride_x: tl.tensor,
    stride_y: tl.tensor,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
    UPCAST: tl.constexpr,
) -> None:
    """One block of rows: ``sum_j softplus(scale <x_i, y_j> + bias)`` for each row, float32."""
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < n_rows
    scale = tl.load(scale_ptr)
    beta = tl.load(bias_ptr)
    total = tl.zeros([BLOCK_R], dtype=tl.float32)
    for c0 in range(0, n_cols, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        dots = _dot_tile(
            x_ptr, y_ptr, rows, cols, n_rows, n_cols, D, stride_x, stride_y, BLOCK_R, BLOCK_C, BLOCK_K, UPCAST
        )
        s = dots * scale + beta
        sp = tl.maximum(s, 0.0) + _log1p(tl.exp(-tl.abs(s)))
        total += tl.sum(tl.where(row_ok[:, None] & (cols < n_cols)[None, :], sp, 0.0), 1)
    tl.store(out_ptr + rows, total, mask=row_ok)


@_jit_kernel
def _grad_kernel(
    x_ptr: tl.tensor,
    y_ptr: tl.tensor,
    scale_ptr: tl.tensor,
    rb_ptr: tl.tensor,
    cb_ptr: tl.tensor,
    rid_ptr: tl.tensor,
    cid_ptr: tl.tensor,
    lr_ptr: tl.tensor,
    gr_ptr: tl.tensor,
    lc_ptr: tl.tensor,
    gc_ptr: tl.tensor,
    sbias_ptr: tl.tensor,
    gscalar_ptr: tl.tensor,
    gx_ptr: tl.tensor,
    usum_ptr: tl.tensor,
    n_rows: tl.tensor,
    n_cols: tl.tensor,
    D: tl.tensor,
    stride_x: tl.tensor,
    stride_y: tl.tensor,
    e0: tl.tensor,
    e1: tl.tensor,
    e2: tl.tensor,
    e3: tl.tensor,
    e4: tl.tensor,
    e5: tl.tensor,
    e6: tl.tensor,
    e7: tl.tensor,
    MODE: tl.constexpr,
    HAS_RB: tl.constexpr,
    HAS_CB: tl.constexpr,
    HAS_IDS: tl.constexpr,
    NUM_EXC: tl.constexpr,
    ROW_TERM: tl.constexpr,
    COL_TERM: tl.constexpr,
    IN_PLACE: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
    UPCAST: tl.constexpr,
    NORMALISE: tl.constexpr,
) -> None:
    """One block of rows (and, unless ``IN_PLACE``, one chunk of D): ``gx = u @ y`` and ``usum = u.sum(1)``.

    ``MODE`` lse: ``u_ij = g_i exp(s_ij - lse_i)`` (``ROW_TERM``) ``+ g'_j exp(s_ij - lse'_j)`` (``COL_TERM``),
    0 for left-out pairs and where the log-sum-exp is -inf. ``MODE`` softplus: ``u_ij = g sigmoid(s_ij + bias)``.
    ``IN_PLACE``: the program owns every chunk of D of its rows and adds each tile's product into ``gx`` (zeroed
    by the caller) chunk by chunk; otherwise the program's chunk stays in registers and is written once.
    """
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    pid_d = tl.program_id(1)
    row_ok = rows < n_rows
    scale = tl.load(scale_ptr)
    if MODE == 0:
        if ROW_TERM:
            lse_r = tl.load(lr_ptr + rows, mask=row_ok, other=0.0)
            lse_r = tl.where(lse_r == float("-inf"), 0.0, lse_r)
            g_r = tl.load(gr_ptr + rows, mask=row_ok, other=0.0)
    else:
        beta = tl.load(sbias_ptr)
        g_all = tl.load(gscalar_ptr)
    gx_base = gx_ptr + rows.to(tl.int64)[:, None] * D
    dd = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    acc = tl.zeros([BLOCK_R, BLOCK_D], dtype=tl.float32)
    usum = tl.zeros([BLOCK_R], dtype=tl.float32)
    for c0 in range(0, n_cols, BLOCK_C):
        cols = c0 + tl.arange(0, BLOCK_C)
        col_ok = cols < n_cols
        if MODE == 0:
            s = _scores(
                x_ptr, y_ptr, scale, rb_ptr, cb_ptr, rid_ptr, cid_ptr, rows, cols, n_rows, n_cols, D, stride_x,
                stride_y, e0, e1, e2, e3, e4, e5, e6, e7, HAS_RB, HAS_CB, HAS_IDS, NUM_EXC, BLOCK_R, BLOCK_C,
                BLOCK_K, UPCAST,
            )  # fmt: skip
            u = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
            if ROW_TERM:
                u += g_r[:, None] * tl.exp(s - lse_r[:, None])
            if COL_TERM:
                lse_c = tl.load(lc_ptr + cols, mask=col_ok, other=0.0)
                lse_c = tl.where(lse_c == float("-inf"), 0.0, lse_c)
                g_c = tl.load(gc_ptr + cols, mask=col_ok, other=0.0)
                u += g_c[None, :] * tl.exp(s - lse_c[None, :])
        else:
            dots = _dot_tile(
                x_ptr, y_ptr, rows, cols, n_rows, n_cols, D, stride_x, stride_y, BLOCK_R, BLOCK_C, BLOCK_K, UPCAST
            )
            s = dots * scale + beta
            sig = 1.0 / (1.0 + tl.exp(-s))
            u = tl.where(row_ok[:, None] & col_ok[None, :], g_all * sig, 0.0)
        usum += tl.sum(u, 1)
        y_base = y_ptr + cols.to(tl.int64)[:, None] * stride_y
        if IN_PLACE:
            for d0 in range(0, D, BLOCK_D):
                dk = d0 + tl.arange(0, BLOCK_D)
                d_ok = dk < D
                y = tl.load(y_base + dk[None, :], mask=col_ok[:, None] & d_ok[None, :], other=0.0)
                out_mask = row_ok[:, None] & d_ok[None, :]
                part = tl.load(gx_base + dk[None, :], mask=out_mask, other=0.0, cache_modifier=".cg")  # from L2
                part = _add_product(part, u, y, UPCAST, NORMALISE)
                tl.store(gx_base + dk[None, :], part, mask=out_mask)
            # the next tile's read of these chunks may come from other threads of the program: order the stores
            tl.debug_barrier()
        else:
            y = tl.load(y_base + dd[None, :], mask=col_ok[:, None] & (dd < D)[None, :], other=0.0)
            acc = _add_product(acc, u, y, UPCAST, NORMALISE)
    if not IN_PLACE:
        tl.store(gx_base + dd[None, :], acc, mask=row_ok[:, None] & (dd < D)[None, :])
    tl.store(usum_ptr + rows, usum, mask=row_ok & (pid_d == 0))


# ----------------------------------------------------------------------------------------------------------------
# Launchers


def _interpreted() -> bool:
    return type(_lse_kernel).__name__ == "InterpretedFunction"


def _on(x: Tensor) -> AbstractContextManager[Any]:
    """Launch on ``x``'s GPU (Triton launches on the current device)."""
    return torch.cuda.device(x.device) if x.is_cuda else nullcontext()


def _blocks_ok(*sizes: int) -> None:
    for size in sizes:
        if size < 16 or size & (size - 1):
            raise ValueError(f"tile sizes must be powers of two, at least 16 (tl.dot's smallest tile), got {size}")


def _check(a: Tensor, b: Tensor | None = None) -> None:
    if not _AVAILABLE:
        raise RuntimeError("the Triton kernels need triton (pip install triton, or a CUDA build of torch)")
    for x in (a,) if b is None else (a, b):
        if x.ndim != 2:
            raise ValueError(f"the kernels take 2-D embeddings, got shape {tuple(x.shape)}")
        if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            raise ValueError(f"the kernels take float16, bfloat16 or float32 inputs, got {x.dtype}")
    if b is not None:
        if b.shape[1] != a.shape[1] or b.dtype != a.dtype or b.device != a.device:
            raise ValueError(
                f"a and b must share D, dtype and device: {tuple(a.shape)} {a.dtype} {a.device} against "
                f"{tuple(b.shape)} {b.dtype} {b.device}"
            )


def _f32(x: Tensor | None, like: Tensor) -> Tensor:
    """``x`` as a contiguous float32 tensor on ``like``'s device (a dummy pointer when None)."""
    if x is None:
        return like
    return x.detach().to(device=like.device, dtype=torch.float32).contiguous()


def _scalar(x: Tensor, like: Tensor) -> Tensor:
    return x.detach().reshape(()).to(device=like.device, dtype=torch.float32)


def _ids(row_ids: Tensor | None, col_ids: Tensor | None, like: Tensor) -> tuple[Tensor, Tensor, bool]:
    if row_ids is None and col_ids is None:
        return like, like, False
    if row_ids is None or col_ids is None:
        raise ValueError("row_ids and col_ids go together: pass both or neither")
    rid = row_ids.to(device=like.device, dtype=torch.int64).contiguous()
    cid = col_ids.to(device=like.device, dtype=torch.int64).contiguous()
    return rid, cid, True


def _offsets(excluded: tuple[int, ...], n: int, m: int) -> tuple[list[int], int]:
    """The excluded offsets that name pairs of an ``n x m`` matrix, padded to :data:`MAX_EXCLUDED` arguments."""
    inside = sorted({int(k) for k in excluded if -n < k < m})
    if not takes_offsets(excluded, n, m):
        raise ValueError(
            f"the Triton kernels take at most {MAX_EXCLUDED} excluded offsets inside the matrix, got {len(inside)}: "
            "leave views out through ids instead"
        )
    return inside + [0] * (MAX_EXCLUDED - len(inside)), len(inside)


def _fwd_blocks(
    dtype: torch.dtype, block_r: int | None, block_c: int | None, block_k: int | None
) -> tuple[int, int, int]:
    fp32 = dtype == torch.float32
    blocks = block_r or FWD_BLOCK_R, block_c or (64 if fp32 else FWD_BLOCK_C), block_k or (32 if fp32 else FWD_BLOCK_K)
    _blocks_ok(*blocks)
    return blocks


def _launch_lse(
    x: Tensor,
    y: Tensor,
    scale: Tensor,
    rb: Tensor | None,
    cb: Tensor | None,
    rid: Tensor | None,
    cid: Tensor | None,
    excluded: tuple[int, ...],
    blocks: tuple[int, int, int],
) -> Tensor:
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    out = torch.empty(n, dtype=torch.float32, device=x.device)
    if n == 0:
        return out
    rid_t, cid_t, has_ids = _ids(rid, cid, x)
    exc, num_exc = _offsets(excluded, n, m)
    block_r, block_c, block_k = blocks
    grid = (triton.cdiv(n, block_r),)
    with _on(x):
        _lse_kernel[grid](
            x, y, scale, _f32(rb, x), _f32(cb, x), rid_t, cid_t, out, n, m, d, x.stride(0), y.stride(0), *exc,
            HAS_RB=rb is not None, HAS_CB=cb is not None, HAS_IDS=has_ids, NUM_EXC=num_exc,
            BLOCK_R=block_r, BLOCK_C=block_c, BLOCK_K=block_k, UPCAST=_upcast(x),
            num_warps=FWD_NUM_WARPS, num_stages=FWD_NUM_STAGES,
        )  # fmt: skip
    return out


def _upcast(x: Tensor) -> bool:
    return x.dtype == torch.bfloat16 and _interpreted()


def _bwd_blocks(
    dtype: torch.dtype, d: int, blocks: tuple[int | None, int | None, int | None, int | None], large_d: str | None
) -> tuple[int, int, int, int, bool]:
    """``(block_r, block_c, block_k, block_d, in_place)`` of a backward launch: defaults, overrides, strategy."""
    fp32 = dtype == torch.float32
    strategy = large_d or (LARGE_D_FP32 if fp32 else LARGE_D)
    if strategy not in ("accumulate", "recompute"):
        raise ValueError(f"large_d must be 'accumulate' or 'recompute', got {strategy!r}")
    block_r, block_c, block_k, block_d = blocks
    if block_d is None:
        one_chunk = max(16, triton.next_power_of_2(d))
        widest = 128 if fp32 else BWD_MAX_BLOCK_D
        block_d = one_chunk if one_chunk <= widest else BWD_ACCUMULATE_BLOCK_D if strategy == "accumulate" else widest
    in_place = triton.cdiv(d, block_d) > 1 and strategy == "accumulate"
    block_c = block_c or (BWD_ACCUMULATE_BLOCK_C if in_place else BWD_BLOCK_C)
    block_r, block_k = block_r or BWD_BLOCK_R, block_k or (32 if fp32 else BWD_BLOCK_K)
    _blocks_ok(block_r, block_c, block_k, block_d)
    return block_r, block_c, block_k, block_d, in_place


def _launch_grad(
    x: Tensor,
    y: Tensor,
    scale: Tensor,
    *,
    mode: int,
    rb: Tensor | None = None,
    cb: Tensor | None = None,
    rid: Tensor | None = None,
    cid: Tensor | None = None,
    excluded: tuple[int, ...] = (),
    row_term: tuple[Tensor, Tensor] | None = None,
    col_term: tuple[Tensor, Tensor] | None = None,
    sbias: Tensor | None = None,
    gscalar: Tensor | None = None,
    blocks: tuple[int | None, int | None, int | None, int | None] = (None, None, None, None),
    large_d: str | None = None,
) -> tuple[Tensor, Tensor]:
    """``(u @ y, u.sum(1))`` in float32 for the weights ``u`` of ``mode`` over the tiles of ``x`` against ``y``."""
    n, m, d = x.shape[0], y.shape[0], x.shape[1]
    block_r, block_c, block_k, block_d, in_place = _bwd_blocks(x.dtype, d, blocks, large_d)
    chunks = triton.cdiv(d, block_d)
    gx = (torch.zeros if in_place else torch.empty)((n, d), dtype=torch.float32, device=x.device)
    usum = torch.empty(n, dtype=torch.float32, device=x.device)
    if n == 0 or d == 0:
        return gx.zero_(), usum.zero_()
    rid_t, cid_t, has_ids = _ids(rid, cid, x)
    exc, num_exc = _offsets(excluded, n, m)
    lr, gr = row_term if row_term is not None else (x, x)
    lc, gc = col_term if col_term is not None else (x, x)
    grid = (triton.cdiv(n, block_r), 1 if in_place else chunks)  # row blocks first: grid axis 0 has no 65535 cap
    with _on(x):
        _grad_kernel[grid](
            x, y, scale, _f32(rb, x), _f32(cb, x), rid_t, cid_t, lr, gr, lc, gc,
            x if sbias is None else sbias, x if gscalar is None else gscalar, gx, usum,
            n, m, d, x.stride(0), y.stride(0), *exc,
            MODE=mode, HAS_RB=rb is not None, HAS_CB=cb is not None, HAS_IDS=has_ids, NUM_EXC=num_exc,
            ROW_TERM=row_term is not None, COL_TERM=col_term is not None, IN_PLACE=in_place,
            BLOCK_R=block_r, BLOCK_C=block_c, BLOCK_K=block_k, BLOCK_D=block_d,
            UPCAST=_upcast(x), NORMALISE=x.dtype == torch.float16,
            num_warps=BWD_NUM_WARPS, num_stages=BWD_NUM_STAGES,
        )  # fmt: skip
    return gx, usum


def _negated(excluded: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(-k for k in excluded)


def lse_forward(
    a: Tensor,
    b: Tensor,
    scale: Tensor,
    row_bias: Tensor | None,
    col_bias: Tensor | None,
    excluded: tuple[int, ...],
    row_ids: Tensor | None,
    col_ids: Tensor | None,
    want_cols: bool,
    *,
    block_r: int | None = None,
    block_c: int | None = None,
    block_k: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """``(lse_rows (N,), lse_cols (M,) or None)`` of ``s_ij = scale <a_i, b_j> + r_i + c_j``, float32.

    ``lse_rows[i] = log sum_j exp(s_ij)``, ``lse_cols[j] = log sum_i exp(s_ij)`` (when ``want_cols``), over the
    pairs not left out (``j - i`` in ``excluded`` or ``row_ids[i] == col_ids[j]``); -inf where none is left.
    """
    _check(a, b)
    a, b = a.contiguous(), b.contiguous()
    s = _scalar(scale, a)
    blocks = _fwd_blocks(a.dtype, block_r, block_c, block_k)
    rows = _launch_lse(a, b, s, row_bias, col_bias, row_ids, col_ids, excluded, blocks)
    if not want_cols:
        return rows, None
    cols = _launch_lse(b, a, s, col_bias, row_bias, col_ids, row_ids, _negated(excluded), blocks)
    return rows, cols


def lse_backward(
    a: Tensor,
    b: Tensor,
    scale: Tensor,
    row_bias: Tensor | None,
    col_bias: Tensor | None,
    excluded: tuple[int, ...],
    row_ids: Tensor | None,
    col_ids: Tensor | None,
    lse_rows: Tensor,
    g_rows: Tensor,
    lse_cols: Tensor | None,
    g_cols: Tensor | None,
    *,
    block_r: int | None = None,
    block_c: int | None = None,
    block_k: int | None = None,
    block_d: int | None = None,
    large_d: str | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(ga = u @ b, gb = u.T @ a, u.sum(1), u.sum(0))``, float32 and unscaled, for the weights
    ``u_ij = g_rows_i exp(s_ij - lse_rows_i) [+ g_cols_j exp(s_ij - lse_cols_j)]`` (0 where left out or where the
    log-sum-exp is -inf). ``lse_rows``/``lse_cols`` are used as given (e.g. a ring's global log-sum-exp)."""
    _check(a, b)
    if (lse_cols is None) != (g_cols is None):
        raise ValueError("lse_cols and g_cols go together: pass both or neither")
    a, b = a.contiguous(), b.contiguous()
    s = _scalar(scale, a)
    row_term = (_f32(lse_rows, a), _f32(g_rows, a))
    col_term = None if lse_cols is None or g_cols is None else (_f32(lse_cols, a), _f32(g_cols, a))
    blocks = (block_r, block_c, block_k, block_d)
    ga, g_rb = _launch_grad(
        a, b, s, mode=_MODE_LSE, rb=row_bias, cb=col_bias, rid=row_ids, cid=col_ids, excluded=excluded,
        row_term=row_term, col_term=col_term, blocks=blocks, large_d=large_d,
    )  # fmt: skip
    gb, g_cb = _launch_grad(
        b, a, s, mode=_MODE_LSE, rb=col_bias, cb=row_bias, rid=col_ids, cid=row_ids, excluded=_negated(excluded),
        row_term=col_term, col_term=row_term, blocks=blocks, large_d=large_d,
    )  # fmt: skip
    return ga, gb, g_rb, g_cb


def sym_forward(
    z: Tensor,
    scale: Tensor,
    bias: Tensor | None,
    excluded: tuple[int, ...],
    ids: Tensor | None,
    *,
    block_r: int | None = None,
    block_c: int | None = None,
    block_k: int | None = None,
) -> Tensor:
    """``lse (N,)`` of ``s_ij = scale <z_i, z_j> + r_i + r_j`` over the pairs not left out, float32."""
    _check(z)
    z = z.contiguous()
    blocks = _fwd_blocks(z.dtype, block_r, block_c, block_k)
    return _launch_lse(z, z, _scalar(scale, z), bias, bias, ids, ids, excluded, blocks)


def sym_backward(
    z: Tensor,
    scale: Tensor,
    bias: Tensor | None,
    excluded: tuple[int, ...],
    ids: Tensor | None,
    lse: Tensor,
    g: Tensor,
    *,
    block_r: int | None = None,
    block_c: int | None = None,
    block_k: int | None = None,
    block_d: int | None = None,
    large_d: str | None = None,
) -> tuple[Tensor, Tensor]:
    """``(gz = sum_j (w_ij + w_ji) z_j, g_bias = sum_j (w_ij + w_ji))``, float32 and unscaled, for
    ``w_ij = g_i exp(s_ij - lse_i)`` (``excluded`` symmetric)."""
    _check(z)
    z = z.contiguous()
    term = (_f32(lse, z), _f32(g, z))
    return _launch_grad(
        z, z, _scalar(scale, z), mode=_MODE_LSE, rb=bias, cb=bias, rid=ids, cid=ids, excluded=excluded,
        row_term=term, col_term=term, blocks=(block_r, block_c, block_k, block_d), large_d=large_d,
    )  # fmt: skip


def softplus_forward(
    a: Tensor,
    b: Tensor,
    scale: Tensor,
    bias: Tensor,
    *,
    block_r: int | None = None,
    block_c: int | None = None,
    block_k: int | None = None,
) -> Tensor:
    """``sum_ij log(1 + exp(scale <a_i, b_j> + bias))``, a 0-d float32 tensor (per-row sums added in float64)."""
    _check(a, b)
    a, b = a.contiguous(), b.contiguous()
    n, m, d = a.shape[0], b.shape[0], a.shape[1]
    block_r, block_c, block_k = _fwd_blocks(a.dtype, block_r, block_c, block_k)
    rows = torch.empty(n, dtype=torch.float32, device=a.device)
    if n > 0:
        with _on(a):
            _softplus_kernel[(triton.cdiv(n, block_r),)](
                a, b, _scalar(scale, a), _scalar(bias, a), rows, n, m, d, a.stride(0), b.stride(0),
                BLOCK_R=block_r, BLOCK_C=block_c, BLOCK_K=block_k, UPCAST=_upcast(a),
                num_warps=FWD_NUM_WARPS, num_stages=FWD_NUM_STAGES,
            )  # fmt: skip
    return rows.sum(dtype=torch.float64).to(torch.float32)


def softplus_backward(
    a: Tensor,
    b: Tensor,
    scale: Tensor,
    bias: Tensor,
    g: Tensor,
    *,
    block_r: int | None = None,
    block_c: int | None = None,
    block_k: int | None = None,
    block_d: int | None = None,
    large_d: str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(ga = u @ b, gb = u.T @ a, g_bias = u.sum())`` for ``u = g * sigmoid(scale <a_i, b_j> + bias)``, float32
    and unscaled (``g`` a 0-d tensor)."""
    _check(a, b)
    a, b = a.contiguous(), b.contiguous()
    s, beta, g0 = _scalar(scale, a), _scalar(bias, a), _scalar(g, a)
    blocks = (block_r, block_c, block_k, block_d)
    ga, u_rows = _launch_grad(a, b, s, mode=_MODE_SOFTPLUS, sbias=beta, gscalar=g0, blocks=blocks, large_d=large_d)
    gb, _ = _launch_grad(b, a, s, mode=_MODE_SOFTPLUS, sbias=beta, gscalar=g0, blocks=blocks, large_d=large_d)
    return ga, gb, u_rows.sum(dtype=torch.float64).to(torch.float32)
