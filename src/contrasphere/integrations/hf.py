"""A Hugging Face :class:`transformers.TrainerCallback` that measures the geometry of a held-out set of pairs.

At every evaluation of a :class:`transformers.Trainer`, :class:`GeometryCallback` embeds a fixed held-out set of
positive pairs with the trainer's model (without gradients, in eval mode, the modules' modes restored afterwards)
and adds to the evaluation's metrics

- ``eval_alignment``: :func:`contrasphere.metrics.alignment` of the pairs (Wang & Isola, "Understanding
  Contrastive Representation Learning through Alignment and Uniformity on the Hypersphere", ICML 2020);
- ``eval_uniformity``: :func:`contrasphere.metrics.uniformity` of all ``2N`` embeddings (both sides of the pairs);
- ``eval_effective_rank``: :func:`contrasphere.metrics.effective_rank` of the same ``2N`` embeddings (RankMe,
  Garrido et al., ICML 2023).

Usage (see docs/integrations.md)::

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=dev)
    GeometryCallback(texts_a, texts_b, tokenizer=tokenizer).attach(trainer)
    trainer.train()

``attach`` registers the callback and lets it log through ``trainer.log``, so every ``report_to`` backend
(TensorBoard, W&B, MLflow, ...) and ``trainer.state.log_history`` get the values. (The Trainer logs an
evaluation's metrics before it calls ``on_evaluate``, and a callback is not handed the trainer, so a callback
passed only as ``Trainer(callbacks=[...])`` can add its values to the dict ``trainer.evaluate()`` returns, which
``metric_for_best_model`` reads, and to ``state.log_history``, but cannot reach the loggers; it warns once.)

Under multi-process training every process embeds the whole held-out set (the forward pass of a sharded model
needs every process), and ``trainer.log`` reports from the main process only.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

try:
    from transformers import (
        PreTrainedModel,
        Trainer,
        TrainerCallback,
        TrainerControl,
        TrainerState,
        TrainingArguments,
    )
except ImportError as err:  # pragma: no cover - only without the extra
    raise ImportError(
        "contrasphere.integrations.hf needs transformers >= 4.46 and accelerate: pip install 'contrasphere[hf]'"
    ) from err

from ..errors import InputError, InputTypeError
from ._geometry import NAMES, as_embeddings, check_normalize, check_settings, pair_geometry

__all__ = ["EmbedFn", "GeometryCallback", "mean_pool"]

EmbedFn = Callable[[nn.Module, dict[str, Tensor]], Tensor]
"""``embed_fn(model, batch) -> (B, D) embeddings``; ``batch`` is a dict of tensors on the model's device."""


def _hidden_states(output: Any) -> Tensor:
    """The last layer's ``(B, L, H)`` hidden states in a model's output."""
    if isinstance(output, Tensor):
        return output
    hidden = getattr(output, "last_hidden_state", None)
    if hidden is None and getattr(output, "hidden_states", None) is not None:
        hidden = output.hidden_states[-1]
    if hidden is None and isinstance(output, Mapping):
        hidden = output.get("last_hidden_state")
    if not isinstance(hidden, Tensor):
        raise InputError(
            f"the model's output ({type(output).__name__}) has neither last_hidden_state nor hidden_states, so "
            "GeometryCallback cannot mean-pool it; pass embed_fn=lambda model, batch: ... returning (B, D) "
            "embeddings"
        )
    return hidden


def mean_pool(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """The mean of the last hidden states over the tokens that ``batch["attention_mask"]`` keeps (all without one).

    The default ``embed_fn``: a :class:`transformers.PreTrainedModel` is called with ``output_hidden_states=True``
    (so models with a head, e.g. ``BertForMaskedLM``, are pooled from their encoder's last layer); any other
    module is called as ``model(**batch)`` and must return hidden states or an output with ``last_hidden_state``.
    """
    if isinstance(model, PreTrainedModel):
        output = model(**batch, output_hidden_states=True, return_dict=True)
    else:
        output = model(**batch)
    hidden = _hidden_states(output)
    if hidden.ndim == 2:  # already one vector per input
        return hidden
    if hidden.ndim != 3:
        raise InputError(
            f"the model's hidden states have shape {tuple(hidden.shape)}, expected (B, L, H); pass embed_fn= to "
            "say how to turn the output into (B, D) embeddings"
        )
    mask = batch.get("attention_mask")
    if mask is None:
        return hidden.mean(1)
    weight = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weight).sum(1) / weight.sum(1).clamp_min(1)


Inputs = Sequence[str] | Mapping[str, Tensor] | Tensor


def _rows(inputs: Inputs, name: str) -> int:
    if isinstance(inputs, Tensor):
        if inputs.ndim == 0:
            raise InputError(f"{name} must be a (N, L) tensor of input ids, got a 0-dim tensor")
        return int(inputs.shape[0])
    if isinstance(inputs, Mapping):
        if not inputs:
            raise InputError(f"{name} is an empty mapping; give the tokenizer's output, e.g. {{'input_ids': ...}}")
        sizes = {}
        for key, value in inputs.items():
            if not isinstance(value, Tensor) or value.ndim == 0:
                raise InputTypeError(
                    f"{name}[{key!r}] must be a tensor with one row per input, got {type(value).__name__}; "
                    "tokenize with return_tensors='pt' (and padding=True)"
                )
            sizes[key] = int(value.shape[0])
        if len(set(sizes.values())) != 1:
            raise InputError(f"the tensors of {name} have different numbers of rows: {sizes}")
        return next(iter(sizes.values()))
    if isinstance(inputs, str) or not isinstance(inputs, Sequence):
        raise InputTypeError(
            f"{name} must be a list of texts, a mapping of tensors (a tokenizer's output with return_tensors='pt') "
            f"or a tensor of input ids, got {type(inputs).__name__}"
        )
    bad = [i for i, text in enumerate(inputs) if not isinstance(text, str)]
    if bad:
        raise InputTypeError(f"{name} must hold texts (str), but item {bad[0]} is a {type(inputs[bad[0]]).__name__}")
    return len(inputs)


class GeometryCallback(TrainerCallback):
    """Adds alignment, uniformity and effective rank of held-out positive pairs to every evaluation's metrics.

    ``a`` and ``b`` are the two sides of ``N`` positive pairs (row ``i`` of ``a`` is the positive of row ``i`` of
    ``b``), each a list of texts, a tokenizer's output (a mapping of ``(N, ...)`` tensors, padded), or a ``(N, L)``
    tensor of input ids (without an attention mask, so every position is pooled: for unpadded inputs). Texts are
    tokenised ``batch_size`` at a time with ``tokenizer`` (default: the trainer's ``processing_class``), padded and
    truncated to ``max_length``.

    ``embed_fn(model, batch)`` turns a batch (a dict of tensors on the model's device) into ``(B, D)``
    embeddings; the default, :func:`mean_pool`, mean-pools the last hidden states over the attention mask. The
    values are those of :func:`contrasphere.metrics.alignment` (``alpha``), :func:`~contrasphere.metrics.uniformity`
    (``t``, ``max_points``, ``seed``) and :func:`~contrasphere.metrics.effective_rank`, each with ``normalize``,
    logged as ``f"{prefix}_alignment"``, ``f"{prefix}_uniformity"`` and ``f"{prefix}_effective_rank"``. Uniformity
    and effective rank are measured on all ``2N`` embeddings, as contrasphere's own trainer does.
    """

    def __init__(
        self,
        a: Inputs,
        b: Inputs,
        *,
        tokenizer: Callable[..., Any] | None = None,
        embed_fn: EmbedFn | None = None,
        batch_size: int = 32,
        max_length: int | None = 128,
        alpha: float = 2.0,
        t: float = 2.0,
        normalize: bool = True,
        max_points: int | None = None,
        seed: int = 0,
        prefix: str = "eval",
    ) -> None:
        n_a, n_b = _rows(a, "a"), _rows(b, "b")
        if n_a != n_b:
            raise InputError(
                f"a has {n_a} inputs but b has {n_b}: GeometryCallback needs positive pairs, row i of a being the "
                "positive of row i of b"
            )
        if n_a == 0:
            raise InputError("a and b are empty: give at least one positive pair")
        if isinstance(a, (Tensor, Mapping)) != isinstance(b, (Tensor, Mapping)):
            raise InputTypeError("give a and b in the same form: both texts, or both tokenised")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.a, self.b, self.n = a, b, n_a
        self.tokenizer = tokenizer
        self.embed_fn: EmbedFn = mean_pool if embed_fn is None else embed_fn
        self.batch_size, self.max_length = batch_size, max_length
        self.alpha, self.t, self.max_points = check_settings(alpha, t, max_points)
        self.normalize, self.seed, self.prefix = check_normalize(normalize), seed, prefix
        self.trainer: Trainer | None = None
        self._warned = False

    def attach(self, trainer: Trainer) -> GeometryCallback:
        """Register with ``trainer`` (unless already passed in its ``callbacks``) and log through ``trainer.log``,
        so that every ``report_to`` backend gets the values. Returns the callback."""
        if self not in trainer.callback_handler.callbacks:
            trainer.add_callback(self)
        self.trainer = trainer
        return self

    def _batches(self, inputs: Inputs, tokenizer: Callable[..., Any] | None) -> list[dict[str, Tensor]]:
        out = []
        for start in range(0, self.n, self.batch_size):
            stop = start + self.batch_size
            if isinstance(inputs, Tensor):
                out.append({"input_ids": inputs[start:stop]})
            elif isinstance(inputs, Mapping):
                out.append({key: value[start:stop] for key, value in inputs.items()})
            else:
                if tokenizer is None:
                    raise InputError(
                        "GeometryCallback was given texts but no tokenizer: pass tokenizer= or give the Trainer a "
                        "processing_class (or pass tokenised inputs)"
                    )
                truncate = self.max_length is not None
                encoded = tokenizer(
                    list(inputs[start:stop]),
                    padding=True,
                    truncation=truncate,
                    max_length=self.max_length,
                    return_tensors="pt",
                )
                out.append(dict(encoded))
        return out

    @torch.no_grad()
    def embed(self, model: nn.Module, inputs: Inputs, tokenizer: Callable[..., Any] | None = None) -> Tensor:
        """``(N, D)`` embeddings of ``inputs`` (texts, a mapping of tensors or input ids) with ``embed_fn``, in eval
        mode and without gradients; every module's train/eval mode is restored afterwards."""
        tokenizer = self.tokenizer if tokenizer is None else tokenizer
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        modes = [(module, module.training) for module in model.modules()]
        model.eval()
        try:
            parts = []
            for batch in self._batches(inputs, tokenizer):
                batch = {key: value.to(device) if isinstance(value, Tensor) else value for key, value in batch.items()}
                rows = next(iter(batch.values())).shape[0]
                z = as_embeddings(self.embed_fn(model, batch), "embed_fn's output")
                if z.shape[0] != rows:
                    raise InputError(f"embed_fn returned {z.shape[0]} embeddings for a batch of {rows} inputs")
                parts.append(z)
        finally:
            for module, mode in modes:
                module.training = mode
        return torch.cat(parts)

    def measure(self, model: nn.Module, tokenizer: Callable[..., Any] | None = None) -> dict[str, float]:
        """Alignment, uniformity and effective rank of the held-out pairs under ``model`` (keys without prefix)."""
        z_a = self.embed(model, self.a, tokenizer)
        z_b = self.embed(model, self.b, tokenizer)
        return pair_geometry(
            z_a,
            z_b,
            alpha=self.alpha,
            t=self.t,
            normalize=self.normalize,
            max_points=self.max_points,
            seed=self.seed,
        )

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        model: nn.Module | None = None,
        processing_class: Any = None,
        **kwargs: Any,
    ) -> None:
        """Measure the held-out pairs with the model as it is now and add the values to ``metrics`` and the logs."""
        if model is None:
            raise InputError("GeometryCallback.on_evaluate was called without the model; it needs a Trainer's model")
        tokenizer = self.tokenizer if self.tokenizer is not None else processing_class
        measured = self.measure(model, tokenizer)
        values = {f"{self.prefix}_{name}": measured[name] for name in NAMES}
        if metrics is not None:
            metrics.update(values)
        if self.trainer is not None:
            self.trainer.log(values)  # log history and every report_to backend
            return
        state.log_history.append(
            {**values, **({"epoch": state.epoch} if state.epoch is not None else {}), "step": state.global_step}
        )
        if not self._warned:
            self._warned = True
            warnings.warn(
                "GeometryCallback was passed to the Trainer without attach(trainer): its values are in the metrics "
                "trainer.evaluate() returns and in trainer.state.log_history, but report_to backends do not see "
                "them; use GeometryCallback(...).attach(trainer) instead",
                stacklevel=2,
            )
