"""Input checks shared by every loss and metric.

Every public function validates its inputs here, so that bad input fails at once with a message that says what is
wrong and what to do, never later as a NaN. Half-precision inputs are promoted to float32 (the reductions below
exponentiate and sum over many pairs, which float16 and bfloat16 cannot hold); float64 stays float64.
"""

from __future__ import annotations

import functools
import inspect
import math
import typing
from collections.abc import Callable, Iterator
from typing import Any, Literal, TypeVar

import torch
from torch import Tensor

from .errors import InputError, InputTypeError

Rule = Callable[[Any, str], Any]
F = TypeVar("F", bound=Callable[..., Any])

_HALF = (torch.float16, torch.bfloat16)

ValueChecks = Literal["auto", "always", "never"]
_value_checks: ValueChecks = "auto"
# elements :func:`finite` checks at a time: its masks stay at a megabyte whatever the size of the tensor
FINITE_CHUNK = 1 << 20


def set_value_checks(mode: ValueChecks) -> ValueChecks:
    """Choose when inputs' *values* are checked (NaN/Inf embeddings, id ranges, a finite learnable scale); returns
    the previous mode.

    Shapes, dtypes and hyperparameters are always checked: they are known on the host. A value check has to read a
    result back from the tensor's device, which on a GPU stalls the stream until every queued kernel has run, and
    under ``torch.compile`` breaks the graph. So by default (``"auto"``) values are checked for CPU tensors outside
    ``torch.compile``, and skipped on accelerators and inside compiled code, where a NaN shows up in the loss
    instead. ``"always"`` checks everywhere (debugging a GPU run: one synchronisation per loss call), ``"never"``
    nowhere. Also available as ``contrasphere.set_value_checks``.
    """
    global _value_checks
    if mode not in ("auto", "always", "never"):
        raise InputError(f"value checks must be 'auto', 'always' or 'never', got {mode!r}")
    previous, _value_checks = _value_checks, mode
    return previous


def check_values(z: Tensor) -> bool:
    """Whether a check that reads ``z``'s values back to the host runs now (see :func:`set_value_checks`)."""
    if _value_checks == "auto":
        return z.device.type == "cpu" and not torch.compiler.is_compiling()
    return _value_checks == "always"


def promote(z: Tensor) -> Tensor:
    """Return ``z`` in float32 if it is float16 or bfloat16, else unchanged (autograd flows through the cast)."""
    return z.float() if z.dtype in _HALF else z


def embeddings(z: object, name: str = "z", *, min_rows: int = 1, why: str = "", keep_dtype: bool = False) -> Tensor:
    """Check that ``z`` is a finite floating-point ``(B, D)`` tensor with at least ``min_rows`` rows.

    Half-precision input is promoted to float32 unless ``keep_dtype`` (for code that hands it to the pairwise
    engine, which multiplies bfloat16 tiles in bfloat16 and reduces them in float32 itself).
    """
    if not isinstance(z, Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor of shape (B, D), got {type(z).__name__}")
    if z.ndim != 2:
        raise InputError(
            f"{name} must have shape (B, D) (a batch of B embeddings of dimension D), got shape {tuple(z.shape)}; "
            "flatten the features first, e.g. z.flatten(1)"
        )
    if not z.is_floating_point():
        raise InputTypeError(f"{name} must be a floating-point tensor, got dtype {z.dtype}; convert it with z.float()")
    if z.shape[1] == 0:
        raise InputError(f"{name} has shape {tuple(z.shape)}: embeddings of dimension 0 carry nothing to compare")
    if z.shape[0] < min_rows:
        reason = f" ({why})" if why else ""
        raise InputError(f"{name} has {z.shape[0]} row(s) but at least {min_rows} are needed{reason}")
    finite(z, name)
    return z if keep_dtype else promote(z)


_DIVERGED = (
    "the encoder diverged or overflowed (in float16, try bfloat16 or a smaller learning rate) before the loss was "
    "called"
)


def finite(z: Tensor, name: str, advice: str = _DIVERGED) -> None:
    """Raise if ``z`` holds NaN or Inf, counting the bad values; ``advice`` says what to do (for embeddings: the
    encoder diverged).

    Checked in chunks of at most :data:`FINITE_CHUNK` elements (rows, or pieces of a longer row), so the masks stay
    small however large ``z`` is (a 4M x 128 embedding file needs no 1 GB mask); one synchronisation for the whole
    tensor, and a second pass that counts only when something is bad. Skipped where :func:`check_values` says so.
    """
    if not check_values(z):
        return
    # one pass without a mask: a NaN or an Inf anywhere makes the sum NaN or Inf (IEEE arithmetic propagates
    # them); a finite sum proves every value finite, and only a non-finite one (bad values, or an overflowing sum
    # of finite ones) needs the exact, chunked count below
    if math.isfinite(z.detach().sum(dtype=torch.float64 if z.dtype == torch.float64 else torch.float32)):
        return
    chunks = list(_chunks(z.detach(), FINITE_CHUNK))
    if not chunks:
        return
    ok = torch.stack([torch.isfinite(c).all() for c in chunks])
    if bool(ok.all()):
        return
    bad = sum(int((~torch.isfinite(c)).sum()) for c in chunks)
    raise InputError(f"{name} contains {bad} NaN or Inf value(s) out of {z.numel()}; {advice}")


def _chunks(z: Tensor, size: int) -> Iterator[Tensor]:
    """Views of ``z`` of at most ``size`` elements (whole rows where a row fits), covering it once."""
    if z.ndim == 0 or z.numel() <= size:
        if z.numel():
            yield z
        return
    per_row = z.numel() // z.shape[0]
    if per_row <= size:
        yield from torch.split(z, size // per_row)
        return
    for row in z:
        yield from _chunks(row, size)


def same_shape(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise InputError(
            f"{name_a} and {name_b} must have the same shape (row i of one is the positive of row i of the other), "
            f"got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.device != b.device:
        raise InputError(f"{name_a} is on {a.device} but {name_b} is on {b.device}; move both to one device")


def same_dim(a: Tensor, b: Tensor, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise InputError(
            f"{name_a} and {name_b} must have the same embedding dimension, got {a.shape[1]} and {b.shape[1]}"
        )
    if a.device != b.device:
        raise InputError(f"{name_a} is on {a.device} but {name_b} is on {b.device}; move both to one device")


@typing.overload
def common_dtype(z_a: Tensor, z_b: Tensor, /) -> tuple[Tensor, Tensor]: ...
@typing.overload
def common_dtype(*zs: Tensor) -> tuple[Tensor, ...]: ...
def common_dtype(*zs: Tensor) -> tuple[Tensor, ...]:
    """Cast tensors to their promoted common dtype (e.g. float32 with float64 gives float64)."""
    dtype = zs[0].dtype
    for z in zs[1:]:
        dtype = torch.promote_types(dtype, z.dtype)
    return tuple(z.to(dtype) for z in zs)


def positive(value: float, name: str) -> float:
    """Check a hyperparameter that must be a finite positive number (temperature, t, alpha, ...)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise InputError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        value = float(value.detach())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputTypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(value) or value <= 0:
        raise InputError(f"{name} must be a finite number > 0, got {value}")
    return float(value)


# Scores are multiplied by 1 / temperature (or by a scale); float32 (at most 3.4e38) must hold that factor times the
# scores, their sums over a batch and the gradients, with room to spare. 1e-20 leaves 18 orders of magnitude; a
# temperature in use lies between about 1e-3 and 10.
MIN_TEMPERATURE = 1e-20
MAX_SCALE = 1 / MIN_TEMPERATURE


def temperature(value: float, name: str) -> float:
    """Check a temperature or another divisor of the scores: a finite number of at least :data:`MIN_TEMPERATURE`.

    ``positive`` alone lets 1e-40 through, a subnormal whose reciprocal overflows float32: every loss was NaN.
    """
    value = positive(value, name)
    if value < MIN_TEMPERATURE:
        raise InputError(
            f"{name} must be at least {MIN_TEMPERATURE:g}, got {value:g}: the scores are divided by it, and beyond "
            f"{MAX_SCALE:g} the scaled scores, their sums and their gradients overflow float32 (NaN losses); "
            "temperatures in use lie between about 1e-3 and 10"
        )
    return value


def scale(value: float, name: str) -> float:
    """Check a positive multiplier of the scores (uniformity's ``t``, a logit scale): at most :data:`MAX_SCALE`."""
    return _at_most_max_scale(positive(value, name), name)


def non_negative_scale(value: float, name: str) -> float:
    """Check a multiplier of the scores that may be 0 (CACR's ``tau_pos``): in ``[0, MAX_SCALE]``."""
    return _at_most_max_scale(non_negative(value, name), name)


def _at_most_max_scale(value: float, name: str) -> float:
    if value > MAX_SCALE:
        raise InputError(
            f"{name} must be at most {MAX_SCALE:g}, got {value:g}: the scores are multiplied by it, and beyond that "
            "the scaled scores, their sums and their gradients overflow float32 (NaN losses)"
        )
    return value


def integer(value: object, name: str, minimum: int = 1, what: str = "") -> int:
    """Check a count-like hyperparameter: an ``int`` (not a ``bool``) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}{what}, got {value!r}")
    return value


def non_negative(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def scale_tensor(value: Tensor | float, name: str) -> Tensor | float:
    """Check a scalar multiplier that may be learnable (a 0-dim tensor); a float must be in ``(0, MAX_SCALE]``."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise InputError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        finite(value, name)
        return value.reshape(())
    return scale(value, name)


def sample_ids(index: object, n: int, num_samples: int, device: torch.device) -> Tensor:
    """Check ``(n,)`` distinct training-set ids in ``0..num_samples - 1`` (the keys of a loss's per-sample state)."""
    ids = labels(index, n, "index").to(device)
    if not check_values(ids):
        return ids
    if int(ids.min()) < 0 or int(ids.max()) >= num_samples:
        raise InputError(f"index holds sample ids, which must lie in 0..{num_samples - 1}")
    if torch.unique(ids).numel() != ids.numel():
        raise InputError("index repeats a sample id within the batch: per-sample state needs distinct ids")
    return ids


def group_ids(ids: object, n: int, device: torch.device, name: str = "ids") -> Tensor:
    """Check ``(n,)`` integer sample ids (rows that share an id show the same sample), moved to ``device``."""
    if not isinstance(ids, Tensor):
        raise InputTypeError(
            f"{name} must be a torch.Tensor of shape ({n},), one integer sample id per row, got {type(ids).__name__}"
        )
    if ids.ndim != 1 or ids.shape[0] != n:
        raise InputError(f"{name} must have shape ({n},), one sample id per row of the batch, got {tuple(ids.shape)}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise InputTypeError(f"{name} must hold integer sample ids, got dtype {ids.dtype}; convert with ids.long()")
    return ids.to(device)


def labels(y: object, n: int, name: str = "labels") -> Tensor:
    """Check a ``(n,)`` integer label tensor."""
    if not isinstance(y, Tensor):
        raise InputTypeError(f"{name} must be a torch.Tensor of shape ({n},), got {type(y).__name__}")
    if y.ndim != 1 or y.shape[0] != n:
        raise InputError(f"{name} must have shape ({n},), one label per embedding, got shape {tuple(y.shape)}")
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise InputTypeError(f"{name} must hold integer class ids, got dtype {y.dtype}; convert with labels.long()")
    return y


def optional(rule: Rule) -> Rule:
    """A rule that also accepts ``None`` (a hyperparameter whose absence means "off" or "the default")."""

    def check(value: Any, name: str) -> Any:
        return None if value is None else rule(value, name)

    return check


def one_of(choices: tuple[Any, ...]) -> Rule:
    """A rule that accepts only ``choices`` (what a ``Literal[...]`` annotation allows)."""

    def check(value: Any, name: str) -> Any:
        if value not in choices:
            listed = ", ".join(repr(c) for c in choices)
            allowed = " or ".join(repr(c) for c in choices) if len(choices) == 2 else f"one of {listed}"
            raise InputError(f"{name} must be {allowed}, got {value!r}")
        return value

    return check


def _literal_rules(fn: Callable[..., Any]) -> dict[str, Rule]:
    """A :func:`one_of` rule for every keyword-only parameter of ``fn`` annotated ``Literal[...]``."""
    hints = typing.get_type_hints(fn)
    rules: dict[str, Rule] = {}
    for name, hint in hints.items():
        if typing.get_origin(hint) is Literal:
            rules[name] = one_of(typing.get_args(hint))
    return rules


_UNRESOLVED: list[Callable[[], dict[str, Rule]]] = []


def resolve_rules() -> None:
    """Resolve the rules of every function decorated so far (their ``Literal`` annotations), once.

    The package calls it at the end of its import, so that no loss call resolves annotations (which
    ``torch.compile`` cannot trace) the first time it runs.
    """
    while _UNRESOLVED:
        _UNRESOLVED.pop()()


def hyperparameters(**rules: Rule) -> Callable[[F], F]:
    """Declare how a function's keyword-only hyperparameters are checked, once, beside its signature.

    The decorated function checks (and normalises, e.g. ``int`` to ``float``) each named hyperparameter on every
    call, plus every ``Literal[...]``-annotated one against its choices; the rules are kept on the function as
    ``__hyperparameter_rules__`` so that its module twin in :mod:`contrasphere.losses` checks them at construction,
    with the same messages. A default is checked like any other value (a test runs every function's defaults)::

        @check.hyperparameters(temperature=check.positive)
        def nt_xent(z_a, z_b, *, temperature=0.5, block_size=None): ...
    """

    def wrap(fn: F) -> F:
        params = inspect.signature(fn).parameters
        unknown = [n for n in rules if n not in params or params[n].kind is not inspect.Parameter.KEYWORD_ONLY]
        if unknown:
            raise InputTypeError(f"{fn.__name__} has no keyword-only parameter {', '.join(unknown)}")
        resolved: list[dict[str, Rule]] = []

        def all_rules() -> dict[str, Rule]:
            if not resolved:  # annotations resolve only once the defining module is complete
                resolved.append({**_literal_rules(fn), **rules})
            return resolved[0]

        @functools.wraps(fn)
        def checked(*args: Any, **kwargs: Any) -> Any:
            for name, rule in all_rules().items():
                if name in kwargs:
                    kwargs[name] = rule(kwargs[name], name)
            return fn(*args, **kwargs)

        checked.__hyperparameter_rules__ = all_rules  # type: ignore[attr-defined]
        _UNRESOLVED.append(all_rules)
        return typing.cast(F, checked)

    return wrap


def hyperparameter_rules(fn: Callable[..., Any]) -> dict[str, Rule]:
    """The rules :func:`hyperparameters` declared for ``fn`` (with its ``Literal`` choices); ``{}`` if none."""
    rules = getattr(fn, "__hyperparameter_rules__", None)
    return dict(rules()) if rules is not None else _literal_rules(fn)
