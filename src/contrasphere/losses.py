"""Thin ``nn.Module`` wrappers around :mod:`contrasphere.functional`, and the loss registry.

Each module only holds hyperparameters (or learnable scalars such as CLIP's logit scale) and calls its function;
its ``forward`` arguments are named like the model outputs it consumes (``z_a``, ``z_b``, ``z``, ``labels``), so a
training step is ``loss_fn(**model_out)``. Every module is registered under a short name::

    >>> import contrasphere
    >>> loss_fn = contrasphere.create_loss("nt_xent", temperature=0.2)
    >>> contrasphere.list_losses()[:3]
    ['align_uniform', 'alignment', 'clip']

Every loss that reduces over pairs also takes ``block_size``, the pairwise engine's tiling (None: automatic; 0:
dense; a positive number: tiles of that size; see :mod:`contrasphere.pairwise`).
"""

from __future__ import annotations

import difflib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from . import _validate as check
from . import functional as CF


@dataclass(frozen=True)
class LossSpec:
    """What the registry knows of one loss: how to build it, what it consumes, where it comes from."""

    name: str
    cls: type[nn.Module]
    inputs: tuple[str, ...]  # the forward arguments, named like model outputs
    paper: str
    shared: tuple[str, ...] = ()  # inputs that are the same on every rank (a queue): not gathered
    stacked: tuple[str, ...] = ()  # inputs shaped (V, N, D): several views of the batch, samples along dim 1
    indices: tuple[str, ...] = ()  # inputs that hold row indices into the batch: offset by rank when gathered
    dense_pairs: bool = False  # reduces over all pairs without the tiled engine (memory N x N)


_REGISTRY: dict[str, LossSpec] = {}


def register_loss(
    name: str,
    *,
    inputs: tuple[str, ...],
    paper: str,
    shared: tuple[str, ...] = (),
    stacked: tuple[str, ...] = (),
    indices: tuple[str, ...] = (),
    dense_pairs: bool = False,
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator that adds a loss module to the registry under ``name``.

    ``inputs`` names the forward arguments; ``shared`` those among them that every rank holds whole (a MoCo
    queue), which distributed training must not gather; ``stacked`` those shaped ``(V, N, D)`` (views or
    modalities), whose samples run along dimension 1; ``indices`` those that hold row indices into the batch.
    """

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"a loss named {name!r} is registered already ({_REGISTRY[name].cls.__name__})")
        _REGISTRY[name] = LossSpec(
            name=name,
            cls=cls,
            inputs=inputs,
            paper=paper,
            shared=shared,
            stacked=stacked,
            indices=indices,
            dense_pairs=dense_pairs,
        )
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
    """The registry entry of a loss module (by its exact class); ``TypeError`` if it is not registered."""
    for spec in _REGISTRY.values():
        if type(loss) is spec.cls:
            return spec
    raise TypeError(f"{type(loss).__name__} is not a registered loss; register it with @register_loss(...)")


def create_loss(name: str, **kwargs: object) -> nn.Module:
    """Build the registered loss ``name`` with hyperparameters ``kwargs``.

    An unknown name or an unknown keyword raises an error that lists what exists.
    """
    spec = loss_spec(name)
    params = inspect.signature(spec.cls.__init__).parameters
    unknown = [key for key in kwargs if key not in params or key == "self"]
    if unknown:
        accepted = [p for p in params if p != "self"]
        raise TypeError(
            f"loss {name!r} has no hyperparameter {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(accepted) or 'nothing'}"
        )
    return spec.cls(**kwargs)


def _extra(module: nn.Module, names: tuple[str, ...]) -> str:
    return ", ".join(f"{n}={getattr(module, n)!r}" for n in names)


@register_loss("alignment", inputs=("z_a", "z_b"), paper="Wang & Isola, ICML 2020, Eq. 4")
class AlignmentLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.alignment`."""

    def __init__(self, alpha: float = 2.0) -> None:
        super().__init__()
        self.alpha = check.positive(alpha, "alpha")

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return CF.alignment(z_a, z_b, alpha=self.alpha)

    def extra_repr(self) -> str:
        return _extra(self, ("alpha",))


@register_loss("uniformity", inputs=("z",), paper="Wang & Isola, ICML 2020, Eq. 5")
class UniformityLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.uniformity`."""

    def __init__(self, t: float = 2.0, block_size: int | None = None) -> None:
        super().__init__()
        self.block_size = block_size
        self.t = check.positive(t, "t")

    def forward(self, z: Tensor) -> Tensor:
        return CF.uniformity(z, t=self.t, block_size=self.block_size)

    def extra_repr(self) -> str:
        return _extra(self, ("t",))


@register_loss("align_uniform", inputs=("z_a", "z_b"), paper="Wang & Isola, ICML 2020, Section 5")
class AlignUniformLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.align_uniform` (the paper's combined objective)."""

    def __init__(
        self,
        align_weight: float = 1.0,
        uniform_weight: float = 1.0,
        alpha: float = 2.0,
        t: float = 2.0,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.align_weight = check.non_negative(align_weight, "align_weight")
        self.uniform_weight = check.non_negative(uniform_weight, "uniform_weight")
        self.alpha, self.t = check.positive(alpha, "alpha"), check.positive(t, "t")

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return CF.align_uniform(
            z_a,
            z_b,
            align_weight=self.align_weight,
            uniform_weight=self.uniform_weight,
            alpha=self.alpha,
            t=self.t,
            block_size=self.block_size,
        )

    def extra_repr(self) -> str:
        return _extra(self, ("align_weight", "uniform_weight", "alpha", "t"))


@register_loss("info_nce", inputs=("z_a", "z_b"), paper="van den Oord et al., 2018, Eq. 4")
class InfoNCELoss(nn.Module):
    """Module form of :func:`contrasphere.functional.info_nce`; ``forward`` also takes extra ``negatives``."""

    def __init__(self, temperature: float = 0.07, block_size: int | None = None) -> None:
        super().__init__()
        self.block_size = block_size
        self.temperature = check.positive(temperature, "temperature")

    def forward(self, z_a: Tensor, z_b: Tensor, negatives: Tensor | None = None) -> Tensor:
        return CF.info_nce(z_a, z_b, temperature=self.temperature, negatives=negatives, block_size=self.block_size)

    def extra_repr(self) -> str:
        return _extra(self, ("temperature",))


@register_loss("nt_xent", inputs=("z_a", "z_b"), paper="Chen et al. (SimCLR), ICML 2020, Eq. 1")
class NTXentLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.nt_xent`."""

    def __init__(self, temperature: float = 0.5, block_size: int | None = None) -> None:
        super().__init__()
        self.block_size = block_size
        self.temperature = check.positive(temperature, "temperature")

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return CF.nt_xent(z_a, z_b, temperature=self.temperature, block_size=self.block_size)

    def extra_repr(self) -> str:
        return _extra(self, ("temperature",))


@register_loss("clip", inputs=("z_a", "z_b"), paper="Radford et al. (CLIP), ICML 2021, Figure 3")
class CLIPLoss(nn.Module):
    """CLIP loss with a learnable temperature, stored as ``log_logit_scale`` and clamped as CLIP does.

    Args:
        init_temperature: the starting temperature (CLIP: 0.07, i.e. a logit scale of about 14.3).
        max_logit_scale: the logit scale is clamped at this value (CLIP: 100) to keep training stable.
        learnable: if False the scale is a fixed buffer.
    """

    def __init__(
        self,
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        learnable: bool = True,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        if not (math.isfinite(init_temperature) and init_temperature > 0):
            raise ValueError(f"init_temperature must be a finite number > 0, got {init_temperature}")
        if not max_logit_scale >= 1 / init_temperature:
            raise ValueError(
                f"max_logit_scale ({max_logit_scale}) must be at least 1 / init_temperature ({1 / init_temperature:g})"
            )
        value = torch.tensor(math.log(1.0 / init_temperature))
        if learnable:
            self.log_logit_scale = nn.Parameter(value)
        else:
            self.register_buffer("log_logit_scale", value)
        self.max_logit_scale = max_logit_scale

    @property
    def logit_scale(self) -> Tensor:
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return CF.clip_loss(z_a, z_b, logit_scale=self.logit_scale, block_size=self.block_size)

    def extra_repr(self) -> str:
        return f"max_logit_scale={self.max_logit_scale}"


@register_loss("siglip", inputs=("z_a", "z_b"), paper="Zhai et al. (SigLIP), ICCV 2023, Algorithm 1")
class SigLIPLoss(nn.Module):
    """SigLIP loss with a learnable logit scale (stored as its log) and logit bias.

    Args:
        init_logit_scale: starting :math:`t` (SigLIP: 10); init_logit_bias: starting :math:`b` (SigLIP: -10).
        learnable: if False both are fixed buffers.
    """

    def __init__(
        self,
        init_logit_scale: float = 10.0,
        init_logit_bias: float = -10.0,
        learnable: bool = True,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        if not (math.isfinite(init_logit_scale) and init_logit_scale > 0):
            raise ValueError(f"init_logit_scale must be a finite number > 0, got {init_logit_scale}")
        log_scale, bias = torch.tensor(math.log(init_logit_scale)), torch.tensor(float(init_logit_bias))
        if learnable:
            self.log_logit_scale, self.logit_bias = nn.Parameter(log_scale), nn.Parameter(bias)
        else:
            self.register_buffer("log_logit_scale", log_scale)
            self.register_buffer("logit_bias", bias)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return CF.siglip_loss(
            z_a, z_b, logit_scale=self.log_logit_scale.exp(), logit_bias=self.logit_bias, block_size=self.block_size
        )


@register_loss("supcon", inputs=("z", "labels"), paper="Khosla et al. (SupCon), NeurIPS 2020, Eq. 2")
class SupConLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.supcon`."""

    def __init__(
        self, temperature: float = 0.1, base_temperature: float | None = None, block_size: int | None = None
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.temperature = check.positive(temperature, "temperature")
        self.base_temperature = (
            None if base_temperature is None else check.positive(base_temperature, "base_temperature")
        )

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        return CF.supcon(
            z, labels, temperature=self.temperature, base_temperature=self.base_temperature, block_size=self.block_size
        )

    def extra_repr(self) -> str:
        return _extra(self, ("temperature", "base_temperature"))


@register_loss("dcl", inputs=("z_a", "z_b"), paper="Yeh et al. (DCL), ECCV 2022, Eq. 6")
class DCLLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.dcl`."""

    def __init__(self, temperature: float = 0.1, block_size: int | None = None) -> None:
        super().__init__()
        self.block_size = block_size
        self.temperature = check.positive(temperature, "temperature")

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return CF.dcl(z_a, z_b, temperature=self.temperature, block_size=self.block_size)

    def extra_repr(self) -> str:
        return _extra(self, ("temperature",))


@register_loss("dclw", inputs=("z_a", "z_b"), paper="Yeh et al. (DCLW), ECCV 2022, Eq. 7")
class DCLWLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.dclw`."""

    def __init__(self, temperature: float = 0.1, sigma: float = 0.5, block_size: int | None = None) -> None:
        super().__init__()
        self.block_size = block_size
        self.temperature, self.sigma = check.positive(temperature, "temperature"), check.positive(sigma, "sigma")

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return CF.dclw(z_a, z_b, temperature=self.temperature, sigma=self.sigma, block_size=self.block_size)

    def extra_repr(self) -> str:
        return _extra(self, ("temperature", "sigma"))


@register_loss("debiased", inputs=("z_a", "z_b"), paper="Chuang et al. (debiased), NeurIPS 2020, Eq. 7")
class DebiasedNTXentLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.debiased_nt_xent`."""

    def __init__(self, temperature: float = 0.5, tau_plus: float = 0.1, block_size: int | None = None) -> None:
        super().__init__()
        self.block_size = block_size
        self.temperature = check.positive(temperature, "temperature")
        self.tau_plus = check.non_negative(tau_plus, "tau_plus")

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return CF.debiased_nt_xent(
            z_a, z_b, temperature=self.temperature, tau_plus=self.tau_plus, block_size=self.block_size
        )

    def extra_repr(self) -> str:
        return _extra(self, ("temperature", "tau_plus"))


@register_loss("hard_negative", inputs=("z_a", "z_b"), paper="Robinson et al. (HCL), ICLR 2021, Eq. 5")
class HardNegativeNTXentLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.hard_negative_nt_xent`."""

    def __init__(
        self, temperature: float = 0.5, tau_plus: float = 0.1, beta: float = 1.0, block_size: int | None = None
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.temperature = check.positive(temperature, "temperature")
        self.tau_plus = check.non_negative(tau_plus, "tau_plus")
        self.beta = check.non_negative(beta, "beta")

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return CF.hard_negative_nt_xent(
            z_a, z_b, temperature=self.temperature, tau_plus=self.tau_plus, beta=self.beta, block_size=self.block_size
        )

    def extra_repr(self) -> str:
        return _extra(self, ("temperature", "tau_plus", "beta"))


@register_loss("moco", inputs=("q", "k", "queue"), paper="He et al. (MoCo), CVPR 2020, Eq. 1", shared=("queue",))
class MoCoLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.moco_info_nce`; the queue is :class:`contrasphere.moco.KeyQueue`."""

    def __init__(self, temperature: float = 0.2, block_size: int | None = None) -> None:
        super().__init__()
        self.block_size = block_size
        self.temperature = check.positive(temperature, "temperature")

    def forward(self, q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
        return CF.moco_info_nce(q, k, queue, temperature=self.temperature, block_size=self.block_size)

    def extra_repr(self) -> str:
        return _extra(self, ("temperature",))


@register_loss(
    "align_uniform_queue", inputs=("q", "k", "queue"), paper="Wang & Isola, ICML 2020, ImageNet code", shared=("queue",)
)
class AlignUniformQueueLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.align_uniform_queue` (the paper's MoCo-based objective)."""

    def __init__(
        self,
        align_weight: float = 3.0,
        uniform_weight: float = 1.0,
        alpha: float = 2.0,
        t: float = 3.0,
        intra_batch: bool = True,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.align_weight = check.non_negative(align_weight, "align_weight")
        self.uniform_weight = check.non_negative(uniform_weight, "uniform_weight")
        self.alpha, self.t = check.positive(alpha, "alpha"), check.positive(t, "t")
        self.intra_batch = bool(intra_batch)

    def forward(self, q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
        return CF.align_uniform_queue(
            q,
            k,
            queue,
            align_weight=self.align_weight,
            uniform_weight=self.uniform_weight,
            alpha=self.alpha,
            t=self.t,
            intra_batch=self.intra_batch,
            block_size=self.block_size,
        )

    def extra_repr(self) -> str:
        return _extra(self, ("align_weight", "uniform_weight", "alpha", "t", "intra_batch"))


@register_loss("barlow_twins", inputs=("z_a", "z_b"), paper="Zbontar et al. (Barlow Twins), ICML 2021, Eq. 1")
class BarlowTwinsLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.barlow_twins`."""

    def __init__(self, lambd: float = 0.0051, eps: float = 1e-5) -> None:
        super().__init__()
        self.lambd, self.eps = check.positive(lambd, "lambd"), check.positive(eps, "eps")

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return CF.barlow_twins(z_a, z_b, lambd=self.lambd, eps=self.eps)

    def extra_repr(self) -> str:
        return _extra(self, ("lambd",))


@register_loss("spectral", inputs=("z_a", "z_b"), paper="HaoChen et al. (spectral), NeurIPS 2021, Eq. 5")
class SpectralContrastiveLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.spectral_contrastive`."""

    def __init__(self, mu: float | None = 1.0) -> None:
        super().__init__()
        self.mu = None if mu is None else check.positive(mu, "mu")

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return CF.spectral_contrastive(z_a, z_b, mu=self.mu)

    def extra_repr(self) -> str:
        return _extra(self, ("mu",))


@register_loss("swav", inputs=("z_a", "z_b"), paper="Caron et al. (SwAV), NeurIPS 2020, Eq. 1-3")
class SwAVLoss(nn.Module):
    """SwAV with its learnable prototypes, re-normalised onto the sphere before every forward as the SwAV code does.

    Args:
        dim: embedding dimension; num_prototypes: ``K`` (3000 for ImageNet in the paper; fewer for small data).
        temperature, epsilon, sinkhorn_iterations: as :func:`contrasphere.functional.swav`.
    """

    def __init__(
        self,
        dim: int = 128,
        num_prototypes: int = 3000,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
    ) -> None:
        super().__init__()
        check.integer(num_prototypes, "num_prototypes", 2)
        self.prototypes = nn.Parameter(torch.nn.functional.normalize(torch.randn(num_prototypes, dim), dim=1))
        self.temperature = check.positive(temperature, "temperature")
        self.epsilon = check.positive(epsilon, "epsilon")
        self.sinkhorn_iterations = sinkhorn_iterations

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        with torch.no_grad():  # only after an optimiser step moved them: a second forward must not alter the graph
            norms = self.prototypes.norm(dim=1)
            if not torch.allclose(norms, torch.ones_like(norms), atol=1e-5):
                self.prototypes.copy_(torch.nn.functional.normalize(self.prototypes, dim=1))
        return CF.swav(
            z_a,
            z_b,
            self.prototypes,
            temperature=self.temperature,
            epsilon=self.epsilon,
            sinkhorn_iterations=self.sinkhorn_iterations,
        )

    def extra_repr(self) -> str:
        return _extra(self, ("temperature", "epsilon", "sinkhorn_iterations"))


@register_loss("cmc", inputs=("views",), paper="Tian et al. (CMC), ECCV 2020, Eq. 6", stacked=("views",))
class CMCLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.cmc` (full graph over ``V`` views)."""

    def __init__(self, temperature: float = 0.07, block_size: int | None = None) -> None:
        super().__init__()
        self.block_size = block_size
        self.temperature = check.positive(temperature, "temperature")

    def forward(self, views: Tensor) -> Tensor:
        return CF.cmc(views, temperature=self.temperature, block_size=self.block_size)

    def extra_repr(self) -> str:
        return _extra(self, ("temperature",))


@register_loss(
    "symile", inputs=("modalities",), paper="Saporta et al. (Symile), NeurIPS 2024, Eq. 5", stacked=("modalities",)
)
class SymileLoss(nn.Module):
    """Symile with a learnable logit scale, initialised and clamped as CLIP's (see :class:`CLIPLoss`)."""

    def __init__(self, init_temperature: float = 0.07, max_logit_scale: float = 100.0, block_size: int | None = None):
        super().__init__()
        self.block_size = block_size
        temperature = check.positive(init_temperature, "init_temperature")
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.max_logit_scale = check.positive(max_logit_scale, "max_logit_scale")

    def forward(self, modalities: Tensor) -> Tensor:
        scale = self.log_logit_scale.exp().clamp(max=self.max_logit_scale)
        return CF.symile(modalities, logit_scale=scale, block_size=self.block_size)


@register_loss("margin_info_nce", inputs=("z_a", "z_b"), paper="Lepage & Dehak, Interspeech 2023, Eq. 3-4")
class MarginInfoNCELoss(nn.Module):
    """Module form of :func:`contrasphere.functional.margin_info_nce` (additive or additive-angular margin)."""

    def __init__(
        self,
        temperature: float = 1 / 30,
        margin: float = 0.1,
        kind: str = "additive",
        symmetric: bool = True,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in ("additive", "angular"):
            raise ValueError(f"kind must be 'additive' or 'angular', got {kind!r}")
        self.block_size, self.kind, self.symmetric = block_size, kind, bool(symmetric)
        self.temperature = check.positive(temperature, "temperature")
        self.margin = check.non_negative(margin, "margin")

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return CF.margin_info_nce(
            z_a,
            z_b,
            temperature=self.temperature,
            margin=self.margin,
            kind=self.kind,  # type: ignore[arg-type]
            symmetric=self.symmetric,
            block_size=self.block_size,
        )

    def extra_repr(self) -> str:
        return _extra(self, ("temperature", "margin", "kind", "symmetric"))


@register_loss("cwcl", inputs=("z_a", "z_b"), paper="Srinivasa et al. (CWCL), NeurIPS 2023, Eq. 3")
class CWCLLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.cwcl`; ``forward`` also takes the reference ``z_ref``."""

    def __init__(self, temperature: float = 0.07, block_size: int | None = None) -> None:
        super().__init__()
        self.block_size = block_size
        self.temperature = check.positive(temperature, "temperature")

    def forward(self, z_a: Tensor, z_b: Tensor, z_ref: Tensor | None = None) -> Tensor:
        return CF.cwcl(z_a, z_b, temperature=self.temperature, z_ref=z_ref, block_size=self.block_size)

    def extra_repr(self) -> str:
        return _extra(self, ("temperature",))


@register_loss(
    "mochi", inputs=("q", "k", "queue"), paper="Kalantidis et al. (MoCHi), NeurIPS 2020, Sec. 4.1", shared=("queue",)
)
class MoCHiLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.mochi`; draws the synthetic negatives from torch's global RNG."""

    def __init__(
        self,
        temperature: float = 0.2,
        n_hard: int = 1024,
        s_mix: int = 512,
        s_query: int = 256,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.block_size = block_size
        self.temperature = check.positive(temperature, "temperature")
        self.n_hard, self.s_mix, self.s_query = n_hard, s_mix, s_query

    def forward(self, q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
        return CF.mochi(
            q,
            k,
            queue,
            temperature=self.temperature,
            n_hard=self.n_hard,
            s_mix=self.s_mix,
            s_query=self.s_query,
            block_size=self.block_size,
        )

    def extra_repr(self) -> str:
        return _extra(self, ("temperature", "n_hard", "s_mix", "s_query"))


@register_loss(
    "i_mix",
    inputs=("z_a", "z_b", "mix_index", "mix_lambda"),
    paper="Lee et al. (i-Mix), ICLR 2021, Eq. 3",
    indices=("mix_index",),
)
class IMixLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.i_mix`; mix the inputs with :func:`~contrasphere.functional.mix_inputs`.

    Under torch.distributed each rank mixes within its own batch (``mix_index`` is offset by rank when gathered,
    per-sample ``mix_lambda`` is gathered with it).
    """

    def __init__(self, temperature: float = 0.2, block_size: int | None = None) -> None:
        super().__init__()
        self.block_size = block_size
        self.temperature = check.positive(temperature, "temperature")

    def forward(self, z_a: Tensor, z_b: Tensor, mix_index: Tensor, mix_lambda: float | Tensor) -> Tensor:
        return CF.i_mix(z_a, z_b, mix_index, mix_lambda, temperature=self.temperature, block_size=self.block_size)

    def extra_repr(self) -> str:
        return _extra(self, ("temperature",))


@register_loss("cacr", inputs=("views",), paper="Zheng et al. (CACR), TMLR 2023", stacked=("views",), dense_pairs=True)
class CACRLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.cacr`."""

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, tau_pos: float = 1.0, tau_neg: float = 1.0) -> None:
        super().__init__()
        self.alpha, self.beta = check.positive(alpha, "alpha"), check.positive(beta, "beta")
        self.tau_pos, self.tau_neg = check.non_negative(tau_pos, "tau_pos"), check.non_negative(tau_neg, "tau_neg")

    def forward(self, views: Tensor) -> Tensor:
        return CF.cacr(views, alpha=self.alpha, beta=self.beta, tau_pos=self.tau_pos, tau_neg=self.tau_neg)

    def extra_repr(self) -> str:
        return _extra(self, ("alpha", "beta", "tau_pos", "tau_neg"))


@register_loss("macl", inputs=("z_a", "z_b"), paper="Huang et al. (MACL), ICML 2023")
class MACLLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.macl` (model-aware temperature and reweighting)."""

    def __init__(
        self, temperature: float = 0.1, alpha: float = 2.0, schedule: str = "power", block_size: int | None = None
    ) -> None:
        super().__init__()
        if schedule not in ("power", "linear"):
            raise ValueError(f"schedule must be 'power' or 'linear', got {schedule!r}")
        self.block_size, self.schedule = block_size, schedule
        self.temperature, self.alpha = check.positive(temperature, "temperature"), check.positive(alpha, "alpha")

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return CF.macl(
            z_a,
            z_b,
            temperature=self.temperature,
            alpha=self.alpha,
            schedule=self.schedule,  # type: ignore[arg-type]
            block_size=self.block_size,
        )

    def extra_repr(self) -> str:
        return _extra(self, ("temperature", "alpha", "schedule"))


@register_loss(
    "decoupled_uniformity",
    inputs=("views", "prior"),
    paper="Dufumier et al. (KCL), ICML 2023",
    stacked=("views",),
)
class DecoupledUniformityLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.decoupled_uniformity`; ``prior`` may be omitted."""

    def __init__(
        self,
        t: float = 2.0,
        kernel: str = "rbf",
        sigma: float = 1.0,
        lambda_: float | None = 0.01,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        if kernel not in ("rbf", "cosine"):
            raise ValueError(f"kernel must be 'rbf' or 'cosine', got {kernel!r}")
        self.t, self.kernel, self.sigma = check.positive(t, "t"), kernel, check.positive(sigma, "sigma")
        self.lambda_ = None if lambda_ is None else check.positive(lambda_, "lambda_")
        self.block_size = block_size

    def forward(self, views: Tensor, prior: Tensor | None = None) -> Tensor:
        return CF.decoupled_uniformity(
            views,
            prior,
            t=self.t,
            kernel=self.kernel,
            sigma=self.sigma,
            lambda_=self.lambda_,  # type: ignore[arg-type]
            block_size=self.block_size,
        )

    def extra_repr(self) -> str:
        return _extra(self, ("t", "kernel", "sigma", "lambda_"))


@register_loss(
    "feature_transformation",
    inputs=("q", "k", "queue"),
    paper="Zhu et al. (FT), ICCV 2021",
    shared=("queue",),
)
class FeatureTransformationLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.feature_transformation`, drawing the mixing from torch's RNG.

    The defaults are the authors' published run: extrapolation weight ``1 + Beta(2, 2)``, queue interpolation
    ``Beta(1.6, 1.6)``, no re-normalisation of the transformed positives.
    """

    def __init__(
        self,
        temperature: float = 0.2,
        pos_alpha: float = 2.0,
        neg_alpha: float = 1.6,
        normalize_positives: bool = False,
        block_size: int | None = None,
    ) -> None:
        super().__init__()
        self.temperature = check.positive(temperature, "temperature")
        self.pos_alpha, self.neg_alpha = check.positive(pos_alpha, "pos_alpha"), check.positive(neg_alpha, "neg_alpha")
        self.normalize_positives, self.block_size = bool(normalize_positives), block_size

    def forward(self, q: Tensor, k: Tensor, queue: Tensor) -> Tensor:
        draw = CF.feature_transformation_draw(queue.shape[0], pos_alpha=self.pos_alpha, neg_alpha=self.neg_alpha)
        return CF.feature_transformation(
            q,
            k,
            queue,
            temperature=self.temperature,
            normalize_positives=self.normalize_positives,
            block_size=self.block_size,
            **draw,
        )

    def extra_repr(self) -> str:
        return _extra(self, ("temperature", "pos_alpha", "neg_alpha", "normalize_positives"))


@register_loss("poly_view", inputs=("views",), paper="Shidani et al. (poly-view), ICLR 2024", stacked=("views",))
class PolyViewLoss(nn.Module):
    """Module form of :func:`contrasphere.functional.poly_view` (geometric or arithmetic aggregation)."""

    def __init__(self, temperature: float = 0.2, method: str = "geometric", block_size: int | None = None) -> None:
        super().__init__()
        if method not in ("geometric", "arithmetic"):
            raise ValueError(f"method must be 'geometric' or 'arithmetic', got {method!r}")
        self.temperature, self.method, self.block_size = check.positive(temperature, "temperature"), method, block_size

    def forward(self, views: Tensor) -> Tensor:
        return CF.poly_view(
            views,
            temperature=self.temperature,
            method=self.method,
            block_size=self.block_size,  # type: ignore[arg-type]
        )

    def extra_repr(self) -> str:
        return _extra(self, ("temperature", "method"))
