"""contrasphere: contrastive representation learning on the unit hypersphere.

The losses of Wang & Isola, "Understanding Contrastive Representation Learning through Alignment and Uniformity on
the Hypersphere" (ICML 2020), the same quantities as metrics of any embeddings, and the contrastive objectives
built on them, behind one registry::

    import torch.nn.functional as F
    import contrasphere
    from contrasphere import functional as CF, metrics

    z_a, z_b = F.normalize(encoder(x1), dim=-1), F.normalize(encoder(x2), dim=-1)
    loss = CF.align_uniform(z_a, z_b)                       # the paper's objective
    loss = contrasphere.create_loss("nt_xent")(z_a, z_b)      # any registered objective
    metrics.uniformity(embeddings_of_test_set)              # a float, chunked, no gradient

The core needs only torch and numpy.
"""

from . import functional, metrics
from ._validate import resolve_rules as _resolve_rules
from ._validate import set_value_checks
from .functional import align_uniform, alignment, uniformity
from .losses import LossSpec, create_loss, list_losses, loss_spec, register_loss

_resolve_rules()

__version__ = "0.1.0"

__all__ = [
    "LossSpec",
    "align_uniform",
    "alignment",
    "create_loss",
    "functional",
    "list_losses",
    "loss_spec",
    "metrics",
    "register_loss",
    "set_value_checks",
    "uniformity",
]
