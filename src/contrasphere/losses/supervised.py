"""Supervised predictive learning: a linear classifier on the embeddings, trained with the encoder by cross-entropy.

The baseline of Wang & Isola's Figure 3 ("supervised predictive learning: encoder + linear classifier trained with
cross-entropy"), next to which contrastive learning's features are compared on the circle. It is written as a loss
so that it trains on the one training loop with everything else: the classifier is the loss module's parameters,
the trainer optimises them with the encoder's, and the task passes the class labels (as for SupCon).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _validate as check
from ..errors import InputError
from .registry import register_loss


@register_loss(
    "supervised_ce",
    inputs=("z", "labels"),
    paper="Wang & Isola, ICML 2020, Figure 3 (supervised predictive learning baseline)",
)
class SupervisedCrossEntropyLoss(nn.Module):
    """Cross-entropy of a linear classifier ``W z + b`` on the (unit-norm) embeddings, averaged over the rows.

    Args:
        dim: the embedding dimension ``D`` (the classifier's input).
        num_classes: the number of classes ``C``; labels must lie in ``[0, C)``.
        label_smoothing: as :func:`torch.nn.functional.cross_entropy` (0: none, the paper's baseline).

    ``forward(z, labels)``: ``z`` is ``(B, D)``, ``labels`` ``(B,)`` integer class ids. With two views the trainer
    stacks both (and their labels), so each view is classified.
    """

    def __init__(self, dim: int = 128, num_classes: int = 10, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.dim = check.integer(dim, "dim")
        self.num_classes = check.integer(num_classes, "num_classes", 2)
        if not 0 <= label_smoothing < 1:
            raise InputError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self.classifier = nn.Linear(self.dim, self.num_classes)

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        z = check.embeddings(z, "z")
        if z.shape[1] != self.dim:
            raise InputError(
                f"z has dimension {z.shape[1]} but the classifier was built for dim={self.dim}; "
                f"create the loss with dim={z.shape[1]} (the model's out_dim)"
            )
        labels = check.labels(labels, z.shape[0]).to(z.device)
        if check.check_values(labels) and not (0 <= int(labels.min()) and int(labels.max()) < self.num_classes):
            raise InputError(
                f"labels must lie in [0, {self.num_classes}) for num_classes={self.num_classes}, got values in "
                f"[{int(labels.min())}, {int(labels.max())}]; create the loss with num_classes = the number of classes"
            )
        logits = F.linear(z, self.classifier.weight.to(z.dtype), self.classifier.bias.to(z.dtype))
        return F.cross_entropy(logits, labels.long(), label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def predict(self, z: Tensor) -> Tensor:
        """The classifier's predicted class of each row of ``z``."""
        logits: Tensor = self.classifier(check.embeddings(z, "z"))
        return logits.argmax(dim=1)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_classes={self.num_classes}, label_smoothing={self.label_smoothing}"
