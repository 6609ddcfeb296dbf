"""The loss registry, and the factory that makes each pure function's thin module.

Every loss is registered under a short name with what distributed training and the trainer need to know about its
inputs (:class:`LossSpec`). Most losses are a pure function of tensors plus hyperparameters; their module is made
by :func:`function_loss` from the function itself, so that a hyperparameter, its default and its check are stated
once, in the function (its signature and its :func:`contrasphere._validate.hyperparameters` rules). Losses with
learnable parameters (CLIP's logit scale, SwAV's prototypes) or state (iSogCLR) are written out as classes and
registered with :func:`register_loss`.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from .. import _validate as check

LossFunction = Callable[..., Tensor]


@dataclass(frozen=True)
class LossSpec:
    """What the registry knows of one loss: how to build it, what it consumes, where it comes from."""

    name: str
    cls: type[nn.Module]
    inputs: tuple[str, ...]  # the forward arguments, named like model outputs
    paper: str
    fn: LossFunction | None = None  # the pure function it computes (None: a loss with its own math or state)
    shared: tuple[str, ...] = ()  # inputs that are the same on every rank (a queue): not gathered
    stacked: tuple[str, ...] = ()  # inputs shaped (V, N, D): several views of the batch, samples along dim 1
    indices: tuple[str, ...] = ()  # inputs that hold row indices into the batch: offset by rank when gathered
    dense_pairs: bool = False  # reduces over all pairs without the tiled engine (memory N x N)

    @property
    def takes_ids(self) -> bool:
        """Whether ``forward`` takes ``ids``: sample ids, one per row of the batch, whose equal pairs are never
        each other's negatives (false-negative elimination)."""
        return "ids" in inspect.signature(self.fn or self.cls.forward).parameters

    @property
    def hyperparameters(self) -> dict[str, inspect.Parameter]:
        """The module's constructor arguments, by name, with their defaults."""
        params = inspect.signature(self.cls.__init__).parameters
        return {k: p for k, p in params.items() if k != "self" and p.kind is not p.VAR_KEYWORD}


_REGISTRY: dict[str, LossSpec] = {}


def register_loss(
    name: str,
    *,
    inputs: tuple[str, ...],
    paper: str,
    fn: LossFunction | None = None,
    shared: tuple[str, ...] = (),
    stacked: tuple[str, ...] = (),
    indices: tuple[str, ...] = (),
    dense_pairs: bool = False,
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that adds a loss module to the registry under ``name``.

    ``inputs`` names the forward arguments; ``fn`` the pure function the module computes, if there is one;
    ``shared`` the inputs that every rank holds whole (a MoCo queue), which distributed training must not gather;
    ``stacked`` those shaped ``(V, N, D)`` (views or modalities), whose samples run along dimension 1; ``indices``
    those that hold row indices into the batch.
    """

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"a loss named {name!r} is registered already ({_REGISTRY[name].cls.__name__})")
        _REGISTRY[name] = LossSpec(name, cls, inputs, paper, fn, shared, stacked, indices, dense_pairs)
        return cls

    return add


def list_losses() -> list[str]:
    """The names of every registered loss, sorted."""
    return sorted(_REGISTRY)


def loss_spec(name: str) -> LossSpec:
    """The registry entry of ``name``; an unknown name raises ``KeyError`` listing close matches and every name."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown loss {name!r}.{hint} Registered losses: {', '.join(list_losses())}")
    return _REGISTRY[name]


def loss_spec_of(loss: nn.Module) -> LossSpec:
    """The registry entry of a loss module (by its exact class); ``TypeError`` if it is not registered.

    A wrapper that carries its loss's entry as ``spec`` (:class:`GatherLoss`, :class:`MatryoshkaLoss`) gives that
    entry, so wrappers compose in either order.
    """
    wrapped = getattr(loss, "spec", None)
    if isinstance(wrapped, LossSpec):
        return wrapped
    for spec in _REGISTRY.values():
        if type(loss) is spec.cls:
            return spec
    raise TypeError(f"{type(loss).__name__} is not a registered loss; register it with @register_loss(...)")


def create_loss(name: str, **kwargs: object) -> nn.Module:
    """Build the registered loss ``name`` with hyperparameters ``kwargs``.

    An unknown name or an unknown keyword raises an error that lists what exists; a bad value raises the
    function's own ``ValueError`` at once, not at the first forward.
    """
    spec = loss_spec(name)
    accepted = spec.hyperparameters
    unknown = [key for key in kwargs if key not in accepted]
    if unknown:
        raise TypeError(
            f"loss {name!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(accepted) or 'nothing'}"
        )
    return spec.cls(**kwargs)


def _is_hyperparameter(param: inspect.Parameter) -> bool:
    """A keyword-only argument that is not a tensor input (``negatives``, ``z_ref``) nor a random generator."""
    annotation = str(param.annotation)
    return param.kind is param.KEYWORD_ONLY and "Tensor" not in annotation and "Generator" not in annotation


class FunctionLoss(nn.Module):
    """The module twin of a pure loss function: it holds the function's hyperparameters and calls it.

    Subclasses are made by :func:`function_loss`, one per function; ``fn`` and ``hyperparameter_names`` are set
    there. ``forward(*inputs, **more_inputs)`` is ``fn(*inputs, **more_inputs, **hyperparameters)``.
    """

    fn: LossFunction
    hyperparameter_names: tuple[str, ...] = ()

    def __init__(self, **hyperparameters: Any) -> None:
        super().__init__()
        params = inspect.signature(type(self).fn).parameters
        rules = check.hyperparameter_rules(type(self).fn)
        for name in self.hyperparameter_names:
            value = hyperparameters.pop(name, params[name].default)
            setattr(self, name, rules[name](value, name) if name in rules else value)
        if hyperparameters:
            raise TypeError(
                f"{type(self).__name__} has no hyperparameter {', '.join(map(repr, hyperparameters))}; "
                f"it accepts: {', '.join(self.hyperparameter_names) or 'nothing'}"
            )

    def function_kwargs(self) -> dict[str, Any]:
        """The hyperparameters this module passes to its function, by name."""
        return {name: getattr(self, name) for name in self.hyperparameter_names}

    def forward(self, *inputs: Any, **more_inputs: Any) -> Tensor:
        return type(self).fn(*inputs, **more_inputs, **self.function_kwargs())

    def extra_repr(self) -> str:
        shown = {k: v for k, v in self.function_kwargs().items() if k != "block_size"}
        return ", ".join(f"{k}={v!r}" for k, v in shown.items())


def function_loss(
    name: str,
    fn: LossFunction,
    *,
    class_name: str,
    inputs: tuple[str, ...],
    paper: str,
    shared: tuple[str, ...] = (),
    stacked: tuple[str, ...] = (),
    indices: tuple[str, ...] = (),
    dense_pairs: bool = False,
) -> type[FunctionLoss]:
    """Make and register the module of ``fn`` under ``name``: a :class:`FunctionLoss` named ``class_name``.

    Its constructor takes exactly the function's keyword-only hyperparameters (tensor inputs such as
    ``negatives`` stay ``forward`` arguments), with the function's defaults, checked by the function's rules.
    """
    params = inspect.signature(fn).parameters
    names = tuple(p for p, param in params.items() if _is_hyperparameter(param))
    signature = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [params[p].replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in names]
    )
    first_line = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else ""
    doc = f"Module form of :func:`contrasphere.functional.{fn.__name__}` ({paper}).\n\n{first_line}"

    def __init__(self: FunctionLoss, **hyperparameters: Any) -> None:
        FunctionLoss.__init__(self, **hyperparameters)

    __init__.__signature__ = signature  # type: ignore[attr-defined]
    cls = type(
        class_name,
        (FunctionLoss,),
        {"fn": staticmethod(fn), "hyperparameter_names": names, "__init__": __init__, "__doc__": doc},
    )
    cls.__module__ = fn.__module__.replace(".functional.", ".losses.")
    register_loss(
        name,
        inputs=inputs,
        paper=paper,
        fn=fn,
        shared=shared,
        stacked=stacked,
        indices=indices,
        dense_pairs=dense_pairs,
    )(cls)
    return cls
