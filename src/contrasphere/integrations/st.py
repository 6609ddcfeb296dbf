"""contrasphere's objectives and metrics inside sentence-transformers (extra ``contrasphere[sentence-transformers]``).

Named ``st`` so that it never shadows the ``sentence_transformers`` package itself.

- :class:`ContrasphereLoss`: a sentence-transformers loss (``loss(sentence_features, labels)``) on (anchor, positive)
  pairs or (anchor, positive, negative_1, ..., negative_k) tuples that computes any contrasphere objective that fits
  that data format through the pairwise engine: ``"info_nce"`` is exactly ``MultipleNegativesRankingLoss`` (van den
  Oord et al., "Representation Learning with Contrastive Predictive Coding", 2018), ``"clip"`` its symmetric,
  CLIP-style form (Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML
  2021), ``"siglip"`` the pairwise sigmoid loss (Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV
  2023), ``"align_uniform"`` Wang & Isola's objective (ICML 2020), and DCL, the debiased and hard-negative losses,
  HN-NCE, GTE's loss and more (:data:`OBJECTIVES`). In-batch false negatives (duplicated texts, or rows that share a
  sample id) are masked; ``gather_across_devices`` computes the exact global-batch loss.
- :class:`CachedContrasphereLoss`: the same loss with gradient caching (Gao et al., "Scaling Deep Contrastive
  Learning Batch Size under Memory Limited Setup", RepL4NLP 2021), built on sentence-transformers' own cached-loss
  machinery (``CachedLossMixin``), so that it composes with their ``MatryoshkaLoss`` (Kusupati et al., "Matryoshka
  Representation Learning", NeurIPS 2022); its scores go through the tiled engine (``block_size``), so the loss
  stage needs memory linear in the batch, not quadratic.
- :class:`AlignUniformEvaluator`: a ``SentenceEvaluator`` reporting alignment, uniformity and effective rank
  (:mod:`contrasphere.metrics`) and, given gold scores, the STS Spearman correlation.

**Masking in-batch false negatives** (``mask_duplicates``). Two rows of a batch are the same sample when

- ``"text"``: the anchor or positive of one is token for token the anchor or positive of the other (the features
  hold token ids, not strings: identical texts tokenise identically; rows linked through a chain of shared texts
  form one group), or
- ``"labels"``: their ``labels`` are equal: the dataset's label column (``label``, ``labels``, ``score`` or
  ``scores``, which the data collator hands to the loss as ``labels``) holds one integer sample id per row, e.g.
  the query id of datasets with several positives per query.

Rows of one group are never each other's negatives (the objective's ``ids=``, :mod:`contrasphere.functional`): for
the anchor of row ``i``, the positive of row ``j`` of its group leaves the denominator; its own positive stays the
positive. Hard-negative columns are never masked (they are mined as negatives of their own anchor; for the other
anchors they are just more in-batch negatives). ``"auto"`` (the default) is ``"text"`` for the objectives that
take ids and off for those that do not (SigLIP, align_uniform); ``None`` turns masking off. A batch without
duplicates gives exactly the unmasked loss.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import inspect
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

try:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.losses.gradcache import CachedLossMixin, has_static_embedding_input
    from sentence_transformers.base.losses.merged_forward import embed_columns
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "contrasphere.integrations.st needs sentence-transformers >= 6.2: "
        "pip install 'contrasphere[sentence-transformers]'"
    ) from err

from .. import _validate as check
from .. import distributed, metrics
from .. import functional as CF
from ..errors import ConfigError, InputError, InputTypeError
from ..evaluation import sts_spearman
from ..losses import loss_spec
from ..pairwise import sharded, use_tiles

__all__ = ["OBJECTIVES", "AlignUniformEvaluator", "CachedContrasphereLoss", "ContrasphereLoss"]

logger = logging.getLogger(__name__)

MaskMode = Literal["auto", "text", "labels"] | None


def _clip(
    z_a: Tensor,
    z_b: Tensor,
    *,
    logit_scale: float = 1 / 0.07,
    hardness: float = 0.0,
    negatives: Tensor | None = None,
    ids: Tensor | None = None,
    block_size: int | None = None,
) -> Tensor:
    """CLIP's symmetric loss; with hard negatives, the mean of anchor-to-candidates InfoNCE (the negatives added)
    and positive-to-anchors InfoNCE: ``MultipleNegativesRankingLoss(directions=("query_to_doc", "doc_to_query"),
    partition_mode="per_direction")``."""
    if negatives is None:
        return CF.clip_loss(z_a, z_b, logit_scale=logit_scale, hardness=hardness, ids=ids, block_size=block_size)
    t = 1.0 / logit_scale
    forward = CF.info_nce(
        z_a, z_b, temperature=t, hardness=hardness, negatives=negatives, ids=ids, block_size=block_size
    )
    return (forward + CF.info_nce(z_b, z_a, temperature=t, hardness=hardness, ids=ids, block_size=block_size)) / 2


@dataclass(frozen=True)
class Objective:
    """A contrasphere objective that fits (anchor, positive[, negatives]) columns, and how the loss calls it."""

    fn: Callable[..., Tensor]
    scale: Literal["temperature", "logit_scale"] | None  # how ``scale`` reaches it (1 / temperature, or as is)
    negatives: bool = False  # takes hard-negative columns (extra candidates for every anchor)

    @property
    def takes_ids(self) -> bool:
        return "ids" in inspect.signature(self.fn).parameters

    @property
    def hyperparameters(self) -> dict[str, inspect.Parameter]:
        """The keyword arguments a user may set (the scale, the tensors and ``block_size`` are the loss's own)."""
        own = {"temperature", "logit_scale", "negatives", "ids", "block_size"}
        params = inspect.signature(self.fn).parameters.items()
        return {k: p for k, p in params if p.kind is p.KEYWORD_ONLY and k not in own}


#: The objectives that fit sentence-transformers' (anchor, positive[, negative...]) columns, by registry name.
OBJECTIVES: dict[str, Objective] = {
    "info_nce": Objective(CF.info_nce, "temperature", negatives=True),
    "clip": Objective(_clip, "logit_scale", negatives=True),
    "siglip": Objective(CF.siglip_loss, "logit_scale"),
    "align_uniform": Objective(CF.align_uniform, None),
    "nt_xent": Objective(CF.nt_xent, "temperature"),
    "dcl": Objective(CF.dcl, "temperature"),
    "dclw": Objective(CF.dclw, "temperature"),
    "debiased": Objective(CF.debiased_nt_xent, "temperature"),
    "hard_negative": Objective(CF.hard_negative_nt_xent, "temperature"),
    "hn_nce": Objective(CF.hn_nce, "logit_scale"),
    "gte_info_nce": Objective(CF.gte_info_nce, "temperature"),
    "margin_info_nce": Objective(CF.margin_info_nce, "temperature"),
    "euclidean_clip": Objective(CF.euclidean_clip, "logit_scale"),
}

DEFAULT_SCALE = 20.0  # sentence-transformers' default: temperature 0.05


def _objective(name: object) -> Objective:
    if not isinstance(name, str) or name not in OBJECTIVES:
        close = difflib.get_close_matches(str(name), OBJECTIVES, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(
            f"objective {name!r} does not fit sentence-transformers' (anchor, positive[, negative...]) columns.{hint} "
            f"The objectives that do: {', '.join(sorted(OBJECTIVES))}"
        )
    return OBJECTIVES[name]


def _names(predicate: Callable[[Objective], bool]) -> str:
    return ", ".join(sorted(name for name, o in OBJECTIVES.items() if predicate(o)))


# -- sample keys: which rows of a batch show the same sample ----------------------------------------------------

_MODULI = (2_147_483_647, 2_147_483_629)  # two primes below 2^31: products of residues fit in int64
_BASES = (1_000_003, 998_244_353)


def text_keys(features: dict[str, Any]) -> Tensor | None:
    """One int64 key per row of a tokenised column: equal for equal token sequences (a 62-bit polynomial hash of
    the non-padding tokens, by their position among the real tokens, so left or right padding does not matter).
    None when the features hold no ``(N, L)`` ``input_ids`` (a model that does not tokenise text)."""
    ids = features.get("input_ids")
    if not isinstance(ids, Tensor) or ids.ndim != 2:
        return None
    mask = features.get("attention_mask")
    real = (
        mask.bool() if isinstance(mask, Tensor) and mask.shape == ids.shape else torch.ones_like(ids, dtype=torch.bool)
    )
    tokens = (ids.long() + 1) * real  # padding is 0, every real token (id 0 too) is at least 1
    position = (real.long().cumsum(1) - 1).clamp_min(0)
    key = torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
    for modulus, base in zip(_MODULI, _BASES):
        powers = torch.tensor([pow(base, k, modulus) for k in range(ids.shape[1])], device=ids.device)
        digest = ((tokens % modulus) * powers[position] % modulus).sum(1) % modulus
        key = key * modulus + digest
    return key


def groups_of(keys: Tensor) -> Tensor:
    """Sample ids from row keys ``(N, K)``: rows that share any key, directly or through a chain, get one id (the
    smallest row index of their group); ``(N,)`` int64. Keys of different columns live in one namespace, so the
    anchor of one row equal to the positive of another links them."""
    n, k = keys.shape
    _, inverse = torch.unique(keys.reshape(-1), return_inverse=True)
    inverse = inverse.reshape(n, k)
    count = int(inverse.max()) + 1 if inverse.numel() else 0
    group = torch.arange(n, device=keys.device)
    while True:  # min-label propagation between rows and keys; the labels only decrease, so it ends
        per_key = torch.full((count,), n, dtype=torch.long, device=keys.device)
        per_key = per_key.scatter_reduce(0, inverse.reshape(-1), group.repeat_interleave(k), reduce="amin")
        updated = torch.minimum(group, per_key[inverse].amin(1))
        if torch.equal(updated, group):
            return group
        group = updated


# -- the loss ------------------------------------------------------------------------------------------------------


class ContrasphereLoss(nn.Module):
    """Any contrasphere objective that fits (anchor, positive[, negative...]) columns, as a sentence-transformers loss.

    Drop-in for ``MultipleNegativesRankingLoss`` (``loss(sentence_features, labels)``): with the defaults
    (``objective="info_nce"``, ``scale=20``, cosine similarities) value and gradients equal theirs; with hard-negative
    columns too. Every objective of :data:`OBJECTIVES` reads the anchors as ``z_a`` and the positives as ``z_b``
    (the rows pair up); hard-negative columns (``info_nce`` and ``clip`` only) are extra candidates for every anchor,
    as in MNRL. All pairwise reductions go through the engine: ``block_size=None`` picks dense or memory-linear
    tiles by batch size, a positive number forces tiles of that size.

    Equivalences (same ``scale``): ``"info_nce"`` is MNRL (van den Oord et al. 2018); ``hardness=a`` is MNRL's
    ``hardness_mode="in_batch_negatives"`` on pairs and ``"all_negatives"`` with hard negatives, at
    ``hardness_strength=a`` (LLaVE, Lan et al. 2025); ``"clip"`` is ``directions=("query_to_doc", "doc_to_query"),
    partition_mode="per_direction"`` (CLIP, Radford et al. 2021; with ``hardness``, ours weights both directions);
    ``"gte_info_nce"`` is all four directions, ``partition_mode="joint"``, on pairs (Li et al. 2023).

    Args:
        model: the SentenceTransformer being trained.
        objective: a name of :data:`OBJECTIVES`; any other name raises, listing those.
        scale: the scores' multiplier, ``1 / temperature`` (20 by default, sentence-transformers' default); it is
            the objective's ``logit_scale`` or ``1 / temperature``. Give ``scale`` or ``temperature``, not both; the
            objectives without one (``align_uniform``) take neither.
        temperature: ``1 / scale``.
        gather_across_devices: under ``torch.distributed``, gather every column from every rank (with gradients,
            batch sizes may differ) and compute the global-batch loss; each rank then computes only its share of the
            score tiles (:func:`contrasphere.pairwise.sharded`). With DistributedDataParallel's gradient averaging
            the gradients equal those of the single-process loss on the global batch exactly (see
            :mod:`contrasphere.distributed`). The value is the global loss on every rank.
        mask_duplicates: how rows that show the same sample are found (see the module docstring): ``"auto"``,
            ``"text"``, ``"labels"`` or None.
        normalize: project the embeddings onto the unit sphere first (cosine similarities, MNRL's ``cos_sim``);
            False scores raw inner products (MNRL's ``dot_score``).
        block_size: the engine's tile size (None: automatic; 0: dense).
        objective_kwargs: the objective's own hyperparameters (``hardness=9.0`` for info_nce, ``tau_plus=0.1`` for
            debiased, ``logit_bias=-10.0`` for siglip, ...); an unknown one raises, listing those it takes.
    """

    def __init__(
        self,
        model: SentenceTransformer,
        objective: str = "info_nce",
        scale: float | None = None,
        *,
        temperature: float | None = None,
        gather_across_devices: bool = False,
        mask_duplicates: MaskMode = "auto",
        normalize: bool = True,
        block_size: int | None = None,
        **objective_kwargs: Any,
    ) -> None:
        super().__init__()
        self.model = model
        self.objective = objective
        self._objective = spec = _objective(objective)
        self.scale = self._scale(spec, scale, temperature)
        accepted = spec.hyperparameters
        unknown = [k for k in objective_kwargs if k not in accepted]
        if unknown:
            raise TypeError(
                f"objective {objective!r} has no hyperparameter {', '.join(map(repr, unknown))}; it accepts: "
                f"{', '.join(accepted) or 'nothing'} (besides scale or temperature, and block_size)"
            )
        rules = check.hyperparameter_rules(CF.clip_loss if spec.fn is _clip else spec.fn)
        self.objective_kwargs = {k: rules[k](v, k) if k in rules else v for k, v in objective_kwargs.items()}
        if mask_duplicates not in ("auto", "text", "labels", None):
            raise ConfigError(f"mask_duplicates must be 'auto', 'text', 'labels' or None, got {mask_duplicates!r}")
        if mask_duplicates in ("text", "labels") and not spec.takes_ids:
            raise ConfigError(
                f"objective {objective!r} cannot leave false negatives out (it takes no sample ids), so "
                f"mask_duplicates={mask_duplicates!r} does not apply; pass mask_duplicates=None, or use one of the "
                f"objectives that do: {_names(lambda o: o.takes_ids)}"
            )
        self.mask_duplicates: MaskMode = mask_duplicates
        self.gather_across_devices = bool(gather_across_devices)
        self.normalize = bool(normalize)
        use_tiles(1, 1, block_size)  # raises on anything but None, 0 or a positive row count
        self.block_size = block_size

    @staticmethod
    def _scale(spec: Objective, scale: float | None, temperature: float | None) -> float | None:
        if scale is not None and temperature is not None:
            raise ConfigError("give scale or temperature (= 1 / scale), not both")
        if spec.scale is None:
            if scale is not None or temperature is not None:
                raise ConfigError(
                    "this objective has no scale or temperature (align_uniform weighs alignment and uniformity "
                    "instead: align_weight, uniform_weight, alpha, t)"
                )
            return None
        if temperature is not None:
            return 1.0 / check.temperature(temperature, "temperature")
        return check.scale(DEFAULT_SCALE if scale is None else scale, "scale")

    @property
    def temperature(self) -> float | None:
        return None if self.scale is None else 1.0 / self.scale

    # -- which rows show the same sample -------------------------------------------------------------------------

    @property
    def _mask_mode(self) -> Literal["text", "labels"] | None:
        if self.mask_duplicates == "auto":
            return "text" if self._objective.takes_ids else None
        return self.mask_duplicates

    def sample_keys(self, sentence_features: Sequence[dict[str, Any]], labels: Tensor | None) -> Tensor | None:
        """The keys ``(N, K)`` int64 of this process's rows whose equality marks the same sample (see the module
        docstring), or None (no masking). Keys, not ids, because under ``gather_across_devices`` they are gathered
        first: a text duplicated across two ranks is found too."""
        mode = self._mask_mode
        if mode == "labels":
            n = _batch_size(sentence_features[0])
            if labels is None:
                raise InputError(
                    "mask_duplicates='labels' needs sample ids: give the dataset a 'label' column with one integer id "
                    "per row (rows with equal ids are never each other's negatives); the data collator passes it to "
                    "the loss as labels"
                )
            if isinstance(labels, Tensor) and labels.is_floating_point():
                raise InputTypeError(
                    f"mask_duplicates='labels' needs integer sample ids in the label column, got {labels.dtype} "
                    "values (similarity scores?); use mask_duplicates='text' or None with scored data"
                )
            return check.group_ids(labels, n, _device(sentence_features[0]), "labels").long().reshape(n, 1)
        if mode == "text":
            keys = [text_keys(features) for features in list(sentence_features)[:2]]
            if any(k is None for k in keys):
                if self.mask_duplicates == "text":
                    raise InputError(
                        "mask_duplicates='text' compares token ids, but the features hold no (batch, tokens) "
                        "input_ids (a model that does not tokenise text?); pass mask_duplicates='labels' with "
                        "sample ids, or None"
                    )
                return None
            return torch.stack([k for k in keys if k is not None], dim=1)
        return None

    # -- the loss --------------------------------------------------------------------------------------------------

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        features = list(sentence_features)
        self._check_columns(len(features))
        keys = self.sample_keys(features, labels)
        embeddings: list[Tensor] = embed_columns(self.model, features)
        return self.compute_loss_from_embeddings(embeddings, keys)

    def _check_columns(self, count: int) -> None:
        if count < 2:
            raise InputError(
                f"{type(self).__name__} takes (anchor, positive[, negative_1, ..., negative_k]) columns, got {count} "
                "column(s): give the dataset at least an anchor and a positive column (labels are not a column)"
            )
        if count > 2 and not self._objective.negatives:
            raise InputError(
                f"objective {self.objective!r} takes (anchor, positive) pairs, but the batch has {count} columns "
                f"({count - 2} of hard negatives); the objectives that take hard-negative columns: "
                f"{_names(lambda o: o.negatives)}"
            )

    def compute_loss_from_embeddings(self, embeddings: Sequence[Tensor], keys: Tensor | None = None) -> Tensor:
        """The loss of one column's embeddings each (anchors, positives, hard negatives...), ``(N, D)`` each.

        ``keys``: this process's sample keys (:meth:`sample_keys`), or None (no masking).
        """
        embeddings = list(embeddings)
        self._check_columns(len(embeddings))
        n = embeddings[0].shape[0]
        for i, e in enumerate(embeddings):
            if e.ndim != 2 or e.shape[0] != n:
                raise InputError(
                    f"every column needs one embedding per row, (batch, dim); column 0 has {tuple(embeddings[0].shape)}"
                    f", column {i} {tuple(e.shape)}"
                )
        if self.normalize:
            embeddings = [F.normalize(e, dim=-1) for e in embeddings]
        context: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if self.gather_across_devices and distributed.world_size() > 1:
            embeddings = [distributed.all_gather_with_grad(e)[0] for e in embeddings]
            keys = None if keys is None else distributed.all_gather_with_grad(keys)[0]
            context = sharded()
        ids = None
        if keys is not None:
            groups = groups_of(keys)
            if bool((groups != torch.arange(groups.shape[0], device=groups.device)).any()):
                ids = groups  # some rows share a sample; otherwise masking changes nothing and costs a pass
        spec = self._objective
        kwargs: dict[str, Any] = dict(self.objective_kwargs, block_size=self.block_size)
        if spec.scale == "temperature":
            kwargs["temperature"] = self.temperature
        elif spec.scale == "logit_scale":
            kwargs["logit_scale"] = self.scale
        if len(embeddings) > 2:
            kwargs["negatives"] = torch.cat(embeddings[2:])
        if ids is not None:
            kwargs["ids"] = ids
        with context:
            loss: Tensor = spec.fn(embeddings[0], embeddings[1], **kwargs)
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective,
            "scale": self.scale,
            "gather_across_devices": self.gather_across_devices,
            "mask_duplicates": self.mask_duplicates,
            "normalize": self.normalize,
            "block_size": self.block_size,
            **self.objective_kwargs,
        }

    @property
    def citation(self) -> str:
        paper = loss_spec(self.objective).paper
        return f"@misc{{contrasphere_{self.objective},\n    title={{{paper}}},\n    note={{via contrasphere}}\n}}\n"


def _batch_size(features: dict[str, Any]) -> int:
    for key in ("input_ids", "attention_mask"):
        value = features.get(key)
        if isinstance(value, Tensor) and value.ndim > 0:
            return int(value.shape[0])
    for value in features.values():
        if isinstance(value, Tensor) and value.ndim > 0:
            return int(value.shape[0])
    raise InputError("the sentence features hold no batched tensor: cannot tell the number of rows")


def _device(features: dict[str, Any]) -> torch.device:
    for value in features.values():
        if isinstance(value, Tensor):
            return value.device
    return torch.device("cpu")


class CachedContrasphereLoss(CachedLossMixin, ContrasphereLoss):
    """:class:`ContrasphereLoss` with gradient caching (GradCache; Gao et al., RepL4NLP 2021): batch sizes far
    beyond what fits in memory at once.

    Built on sentence-transformers' ``CachedLossMixin``, as their ``CachedMultipleNegativesRankingLoss``: (1) embed
    every mini-batch of ``mini_batch_size`` rows without gradients, (2) compute the loss on the whole batch and
    back-propagate it to the embeddings, caching their gradients, (3) re-embed each mini-batch with gradients (the
    same dropout, replayed) and back-propagate the cached gradients. Step (2) runs on the tiled engine: with
    ``block_size`` rows per tile (1024 by default) it holds ``O(N D + block_size^2)`` numbers, never the
    ``N x N(1 + k)`` score matrix, so the loss stage is as memory-linear as the embedding stage. Value and
    gradients equal ``CachedMultipleNegativesRankingLoss`` (and :class:`ContrasphereLoss`). Wrapping it in
    ``MatryoshkaLoss`` (Kusupati et al., NeurIPS 2022) works as with their cached losses: the decorator truncates
    the cached embeddings for each dimension.

    Args:
        mini_batch_size: rows per embedding forward pass (memory of the model's activations).
        mini_batch_num_tokens: pack the mini-batches by token count instead (sentence-transformers' option).
        show_progress_bar: a progress bar over the mini-batches.
        block_size: the engine's tile size for the loss stage.
        kwargs: everything else, as :class:`ContrasphereLoss` (``temperature``, ``mask_duplicates``, the
            objective's hyperparameters, ...).
    """

    def __init__(
        self,
        model: SentenceTransformer,
        objective: str = "info_nce",
        scale: float | None = None,
        *,
        mini_batch_size: int = 32,
        mini_batch_num_tokens: int | None = None,
        show_progress_bar: bool = False,
        block_size: int | None = 1024,
        **kwargs: Any,
    ) -> None:
        if has_static_embedding_input(model):
            raise ConfigError(
                "a cached loss cannot split a StaticEmbedding model's inputs into mini-batches; use ContrasphereLoss"
            )
        if isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, int) or mini_batch_size < 1:
            raise ConfigError(f"mini_batch_size must be a positive integer, got {mini_batch_size!r}")
        if mini_batch_num_tokens is not None and mini_batch_num_tokens <= 0:
            raise ConfigError(f"mini_batch_num_tokens must be a positive integer or None, got {mini_batch_num_tokens}")
        ContrasphereLoss.__init__(self, model, objective, scale, block_size=block_size, **kwargs)
        self.mini_batch_size = mini_batch_size
        self.mini_batch_num_tokens = mini_batch_num_tokens
        self.show_progress_bar = show_progress_bar

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        features = list(sentence_features)
        self._check_columns(len(features))
        # the sample keys travel where the mixin passes labels, so that MatryoshkaLoss's decorator hands them on
        loss: Tensor = self.forward_cached(features, self.sample_keys(features, labels))
        return loss

    def calculate_loss(
        self, reps: list[list[Tensor]], labels: Tensor | None = None, *, with_backward: bool = False
    ) -> Tensor:
        """The loss of the cached mini-batch embeddings ``reps[column][mini_batch]``; ``labels`` are the sample
        keys (:meth:`sample_keys`). With ``with_backward``, back-propagate to the embeddings and return it detached."""
        loss = self.compute_loss_from_embeddings([torch.cat(column) for column in reps], labels)
        if with_backward:
            torch.autograd.backward(loss)
            loss = loss.detach()
        return loss

    def get_config_dict(self) -> dict[str, Any]:
        return {
            **super().get_config_dict(),
            "mini_batch_size": self.mini_batch_size,
            "mini_batch_num_tokens": self.mini_batch_num_tokens,
        }


# -- the evaluator -------------------------------------------------------------------------------------------------

_LOWER_IS_BETTER = {"alignment", "uniformity", "align_uniform"}


class AlignUniformEvaluator(SentenceEvaluator):
    """Alignment, uniformity and effective rank of a model's embeddings of sentence pairs, and STS Spearman.

    Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity on the
    Hypersphere", ICML 2020 (their metrics, as SimCSE reports them for sentence embeddings, Gao et al. 2021); the
    effective rank of Garrido et al., "RankMe", ICML 2023. Every number is the function of :mod:`contrasphere.metrics`
    (or :func:`contrasphere.evaluation.sts_spearman`) on the model's embeddings, projected onto the sphere:

    - ``alignment``: :func:`contrasphere.metrics.alignment` over the positive pairs: every pair
      ``(sentences1[i], sentences2[i])``, or, with ``scores`` and ``positive_threshold``, those scored above the
      threshold (SimCSE takes STS-B pairs above 4 of 5). Lower is better;
    - ``uniformity``: :func:`contrasphere.metrics.uniformity` over the distinct sentences of both lists. Lower is
      better;
    - ``effective_rank``: :func:`contrasphere.metrics.effective_rank` of the same set;
    - ``align_uniform``: alignment + uniformity, the paper's objective at unit weights (lower is better);
    - ``spearman_cosine`` (with ``scores``): Spearman's correlation of the pairs' cosine similarities with the gold
      scores (:func:`contrasphere.evaluation.sts_spearman`), named as sentence-transformers'
      ``EmbeddingSimilarityEvaluator`` names it.

    Returns the metrics dict with sentence-transformers' conventions: keys prefixed by ``name`` (``sts_dev_alignment``),
    ``primary_metric`` set (``spearman_cosine`` with scores, else ``align_uniform``, or ``main_metric``), and
    ``greater_is_better`` following it; a CSV row per call under ``output_path`` when ``write_csv``.
    """

    def __init__(
        self,
        sentences1: Sequence[str],
        sentences2: Sequence[str],
        scores: Sequence[float] | None = None,
        *,
        positive_threshold: float | None = None,
        alpha: float = 2.0,
        t: float = 2.0,
        batch_size: int = 32,
        name: str = "",
        main_metric: str | None = None,
        show_progress_bar: bool = False,
        write_csv: bool = True,
        truncate_dim: int | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # unannotated in sentence-transformers
        self.sentences1, self.sentences2 = list(sentences1), list(sentences2)
        if len(self.sentences1) != len(self.sentences2):
            raise InputError(
                f"sentences1 and sentences2 must pair up: {len(self.sentences1)} and {len(self.sentences2)} sentences"
            )
        if not self.sentences1:
            raise InputError("the evaluator needs at least one sentence pair")
        self.scores = None if scores is None else [float(s) for s in scores]
        if self.scores is not None and len(self.scores) != len(self.sentences1):
            raise InputError(f"scores needs one gold score per pair ({len(self.sentences1)}), got {len(self.scores)}")
        if positive_threshold is not None:
            if self.scores is None:
                raise ConfigError("positive_threshold selects pairs by their gold score: give scores too")
            if not any(s > positive_threshold for s in self.scores):
                raise InputError(f"no pair is scored above positive_threshold={positive_threshold}")
        self.positive_threshold = positive_threshold
        self.alpha = check.positive(alpha, "alpha")
        self.t = check.scale(t, "t")
        self.batch_size = batch_size
        self.name = name
        self.show_progress_bar = show_progress_bar
        self.write_csv = write_csv
        self.truncate_dim = truncate_dim
        self.metric_names = ["alignment", "uniformity", "effective_rank", "align_uniform"]
        if self.scores is not None:
            self.metric_names.append("spearman_cosine")
        default = "spearman_cosine" if self.scores is not None else "align_uniform"
        main = default if main_metric is None else main_metric
        if main not in self.metric_names:
            raise ConfigError(f"main_metric must be one of {', '.join(self.metric_names)}, got {main_metric!r}")
        self.main_metric = main
        self.primary_metric = main
        self.greater_is_better = main not in _LOWER_IS_BETTER
        self.csv_file = "align_uniform_evaluation" + (f"_{name}" if name else "") + "_results.csv"
        self.csv_headers = ["epoch", "steps", *self.metric_names]

    def __call__(  # type: ignore[override]  # a SentenceTransformer, as their EmbeddingSimilarityEvaluator takes
        self, model: SentenceTransformer, output_path: str | None = None, epoch: int = -1, steps: int = -1
    ) -> dict[str, float]:
        distinct = list(dict.fromkeys(self.sentences1 + self.sentences2))
        where = {s: i for i, s in enumerate(distinct)}
        z = model.encode(
            distinct,
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress_bar,
            convert_to_tensor=True,
            truncate_dim=self.truncate_dim,
        )
        z = z.detach().float().cpu()
        z1 = z[torch.tensor([where[s] for s in self.sentences1])]
        z2 = z[torch.tensor([where[s] for s in self.sentences2])]
        if self.positive_threshold is not None and self.scores is not None:
            keep = torch.tensor([s > self.positive_threshold for s in self.scores])
            aligned = metrics.alignment(z1[keep], z2[keep], alpha=self.alpha)
        else:
            aligned = metrics.alignment(z1, z2, alpha=self.alpha)
        values = {
            "alignment": aligned,
            "uniformity": metrics.uniformity(z, t=self.t) if z.shape[0] > 1 else float("nan"),
            "effective_rank": metrics.effective_rank(z),
        }
        values["align_uniform"] = values["alignment"] + values["uniformity"]
        if self.scores is not None:
            values["spearman_cosine"] = sts_spearman(z1, z2, torch.tensor(self.scores, dtype=torch.float64))
        logger.info("AlignUniformEvaluator %s: %s", self.name, ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
        if output_path is not None and self.write_csv:
            os.makedirs(output_path, exist_ok=True)
            path = os.path.join(output_path, self.csv_file)
            exists = os.path.isfile(path)
            with open(path, mode="a" if exists else "w", newline="", encoding="utf-8") as f:
                writer = csv.writer(f)
                if not exists:
                    writer.writerow(self.csv_headers)
                writer.writerow([epoch, steps, *(values[k] for k in self.metric_names)])
        self.primary_metric = self.main_metric
        results: dict[str, float] = self.prefix_name_to_metrics(values, self.name)
        self.store_metrics_in_model_card_data(model, results, epoch, steps)
        return results

    @property
    def description(self) -> str:
        return "Alignment and Uniformity"

    def get_config_dict(self) -> dict[str, Any]:
        config: dict[str, Any] = {"alpha": self.alpha, "t": self.t}
        if self.positive_threshold is not None:
            config["positive_threshold"] = self.positive_threshold
        if self.truncate_dim is not None:
            config["truncate_dim"] = self.truncate_dim
        return config
