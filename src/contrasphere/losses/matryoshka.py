"""Matryoshka representation learning: any registered loss applied to nested prefixes of the embeddings.

:class:`MatryoshkaLoss` is a wrapper, not an objective, so it is not in the registry (as :class:`GatherLoss`):
it reads the wrapped loss's :class:`~contrasphere.losses.LossSpec` to know which inputs are embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from .. import _validate as check
from ..errors import InputError, InputTypeError
from .registry import LossSpec, loss_spec_of

# the input roles that hold embeddings (their last dimension is the embedding's); labels, sample ids, mixing
# indices and weights and priors are passed through whole
EMBEDDING_ROLES = frozenset({"z_a", "z_b", "z", "q", "k", "queue", "views", "modalities"})


class MatryoshkaLoss(nn.Module):
    r"""The weighted sum of a loss over nested prefixes of every embedding input.

    :math:`\mathcal{L} = \sum_m c_m\, \ell\big(z_{1:d_m}, \dots\big)`, each embedding input ``z`` (``z_a``,
    ``z_b``, ``z``, ``q``, ``k``, ``queue``, ``views``, ``modalities``) cut to its first :math:`d_m` coordinates,
    ``z[..., :d]``, and the other inputs (labels, sample ids, mixing indices and weights, priors) passed unchanged
    (Kusupati et al., "Matryoshka Representation Learning", NeurIPS 2022, Eq. 1, with the loss of each prefix the
    wrapped contrastive loss instead of a classifier's, as sentence-transformers' ``MatryoshkaLoss``). A learnable
    part of the wrapped loss (CLIP's logit scale) is one module, shared by every prefix.

    Args:
        loss: a registered loss module (or a :class:`GatherLoss` around one: its spec is used).
        dims: the prefix lengths :math:`d_m`, integers >= 1; each must be at most the embeddings' dimension
            (checked at every call). The default is sentence-transformers' usual ``(768, 512, 256, 128, 64)``.
        weights: :math:`c_m \ge 0`, one per dim; None (default) weights every prefix 1, as sentence-transformers.
        normalize: project each prefix back onto the unit sphere, ``F.normalize(z[..., :d], dim=-1)`` (the
            default, as sentence-transformers: a prefix of a unit vector is shorter than 1, and the losses here use
            embeddings as given, so for cosine similarities each prefix needs its own normalisation). Set False
            for a loss that expects raw embeddings (EuCLIP, Barlow Twins, VICReg).
        spec: the wrapped loss's registry entry, when it cannot be read off the module.

    Distributed: ``MatryoshkaLoss(GatherLoss(loss))`` gathers each prefix, ``GatherLoss(MatryoshkaLoss(loss))``
    gathers the whole embeddings once and cuts them after; both give the loss of the global batch.
    """

    def __init__(
        self,
        loss: nn.Module,
        dims: Sequence[int] = (768, 512, 256, 128, 64),
        weights: Sequence[float] | None = None,
        *,
        normalize: bool = True,
        spec: LossSpec | None = None,
    ) -> None:
        super().__init__()
        if spec is None:
            spec = loss_spec_of(loss)
        if isinstance(dims, int) or not isinstance(dims, Sequence) or len(dims) == 0:
            raise InputTypeError(f"dims must be a non-empty sequence of prefix lengths, e.g. (256, 64), got {dims!r}")
        self.dims = tuple(check.integer(d, "each of dims") for d in dims)
        if weights is None:
            weights = [1.0] * len(self.dims)
        if isinstance(weights, (int, float)) or len(weights) != len(self.dims):
            raise InputError(f"weights must hold one number per dim ({len(self.dims)}), got {weights!r}")
        self.weights = tuple(check.non_negative(w, "each of weights") for w in weights)
        self.embedding_inputs = tuple(role for role in spec.inputs if role in EMBEDDING_ROLES)
        if not self.embedding_inputs:
            raise InputTypeError(f"loss {spec.name!r} takes no embedding input to cut into prefixes: {spec.inputs}")
        self.loss = loss
        self.spec = spec
        self.normalize = normalize

    def _prefix(self, z: Tensor, d: int) -> Tensor:
        cut = z[..., :d]
        return F.normalize(cut, dim=-1) if self.normalize else cut

    def forward(self, **inputs: Tensor) -> Tensor:
        for name in self.embedding_inputs:
            value = inputs.get(name)
            if isinstance(value, Tensor) and value.ndim >= 1:
                too_large = [d for d in self.dims if d > value.shape[-1]]
                if too_large:
                    raise InputError(
                        f"MatryoshkaLoss: dims {too_large} exceed the embedding dimension of {name} "
                        f"({value.shape[-1]}, shape {tuple(value.shape)}); use prefix lengths of at most "
                        f"{value.shape[-1]}"
                    )
        total: Tensor | None = None
        for d, w in zip(self.dims, self.weights):
            cut = {k: self._prefix(v, d) if k in self.embedding_inputs else v for k, v in inputs.items()}
            term: Tensor = self.loss(**cut)
            total = w * term if total is None else total + w * term
        assert total is not None
        return total

    def extra_repr(self) -> str:
        shown = "" if all(math.isclose(w, 1.0) for w in self.weights) else f", weights={self.weights}"
        return f"dims={self.dims}{shown}, normalize={self.normalize}"
