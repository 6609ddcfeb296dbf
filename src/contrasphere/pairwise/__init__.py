"""The engine: reductions over all pairs of two sets of embeddings, dense or in tiles.

Almost every objective in contrasphere reduces over an ``N x M`` matrix of pair scores
:math:`s_{ij} = \\sigma \\langle a_i, b_j\\rangle + c_j`:

- a row log-sum-exp (:func:`row_logsumexp`): InfoNCE, NT-Xent, CLIP (rows and columns), DCL, SupCon's
  denominator, MoCo's queue, and uniformity (a log-sum-exp of the row log-sum-exps, with
  :math:`-t\\lVert a_i - b_j\\rVert^2 = 2t\\langle a_i, b_j\\rangle - t\\lVert b_j\\rVert^2 - t\\lVert a_i\\rVert^2`);
- an element-wise sum of :math:`\\log(1 + e^{s_{ij}})` (:func:`softplus_sum`): SigLIP.

Each has two implementations with the same value and gradient. The dense one materialises the matrix (fast for
small batches). The tiled one (flash-attention / Inf-CL style) visits ``row_block x col_block`` tiles with an online
running maximum, accumulates in float32 (float64 for float64 input), and recomputes each tile in the backward pass
instead of storing it, so memory grows as ``(N + M) * D + row_block * col_block`` rather than ``N * M``. Every
loss chooses through ``block_size``: ``None`` picks dense up to :func:`dense_max_pairs` pairs for the device (4M
on a CPU, 256k on CUDA with Triton) and tiles above, ``0`` forces dense, a positive number forces tiles of that
many rows. bfloat16 inputs are multiplied in bfloat16 where the device has bfloat16 matrix units
(:func:`native_low_precision`: CUDA, CPUs with AVX512-BF16 or AMX), in float32 elsewhere, and reduced in float32.

The tiled passes are custom operators (``torch.compile`` sees one node with a shape function), which run fused
Triton kernels on CUDA tensors and the PyTorch tiles elsewhere (:func:`kernels` chooses otherwise). No loss call
reads a device value back to the host where value checks are off (``contrasphere.set_value_checks``).

Layout: :mod:`._tiling` (sizes, dtypes, tile generators), :mod:`.rows` (row and row-and-column passes),
:mod:`.symmetric` (the symmetric pass and the Gaussian log-sum-exp of uniformity), :mod:`.softplus` (SigLIP),
:mod:`.sharding` (under data parallelism, each rank computes its share of the tiles: :func:`sharded`).
"""

from ._tiling import (
    CUDA_DENSE_MAX_PAIRS,
    DENSE_MAX_PAIRS,
    ROW_BLOCK,
    SYM_BLOCK,
    TILE_PAIRS,
    acc_dtype,
    dense_max_pairs,
    kernels,
    native_low_precision,
    use_tiles,
)
from .rows import dense_scores, row_col_logsumexp, row_logsumexp, runs_dense
from .sharding import sharded
from .softplus import softplus_sum
from .symmetric import gaussian_logsumexp, sym_row_logsumexp

__all__ = [
    "CUDA_DENSE_MAX_PAIRS",
    "DENSE_MAX_PAIRS",
    "ROW_BLOCK",
    "SYM_BLOCK",
    "TILE_PAIRS",
    "acc_dtype",
    "dense_max_pairs",
    "dense_scores",
    "gaussian_logsumexp",
    "kernels",
    "native_low_precision",
    "row_col_logsumexp",
    "row_logsumexp",
    "runs_dense",
    "sharded",
    "softplus_sum",
    "sym_row_logsumexp",
    "use_tiles",
]
