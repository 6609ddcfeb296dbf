"""Why SupCon collapses in the vision reproduction (issue 14, item 2): a diagnostic, not a test.

The vision reproduction's setup (``contrasphere.reproduce.vision``: the small convnet, SGD lr 0.4, bf16) at a small
budget (10,000 training images, 2 epochs, 78 steps), with one factor changed at a time. For each run: the final
training loss (a fully collapsed batch of 2N = 512 rows scores exactly log(511) = 6.2363), the held-out alignment
and uniformity (0 and 0 when collapsed), and linear / kNN accuracies of the encoder and of the output.

The isolating runs use three losses defined here only (registered under names the library does not use):

- ``diag_supcon_shuffled``: SupCon with each step's labels permuted within the batch (labels independent of the
  images, the same class sizes): if the collapse comes from labels the features cannot yet predict, it collapses
  the same way;
- ``diag_warm_supcon``: NT-Xent for the first epoch, then SupCon: the same labels, but starting from features that
  already carry some class signal;
- ``diag_supcon_plus_nt_xent``: SupCon + NT-Xent: the instance term's single, always-identifiable positive.

A measurement at initialisation completes it: SupCon's loss with the true labels and with permuted labels, on the
untrained encoder and after one epoch of NT-Xent (how much class signal the features carry).

    python scripts/supcon_collapse_diagnostic.py    # about 8 minutes on 2 CPU cores; writes the JSON below

Rows already in the JSON are kept (by label), so a rerun only trains what is missing.
"""

import json
import math
import tempfile
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from contrasphere import functional as CF
from contrasphere.losses.registry import register_loss
from contrasphere.reproduce import vision as V
from contrasphere.train import build, train

OUT = Path(__file__).resolve().parents[1] / "docs" / "reproduce" / "vision" / "supcon_diagnostic.json"
STEPS_PER_EPOCH = 39  # 10,000 images, batch 256
BATCHES = 5  # training batches of the label-signal measurement


class _Diagnostic(nn.Module):
    """A diagnostic loss over both views stacked with their labels, at SupCon temperature ``temperature``."""

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__()
        self.temperature = temperature


@register_loss("diag_supcon_shuffled", inputs=("z", "labels"), paper="diagnostic")
class ShuffledSupCon(_Diagnostic):
    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        n = labels.shape[0] // 2  # the two views are stacked: permute the samples, keep the views' pairing
        perm = torch.randperm(n, device=labels.device)
        shuffled = labels[:n][perm]
        return CF.supcon(z, torch.cat([shuffled, shuffled]), temperature=self.temperature)


@register_loss("diag_warm_supcon", inputs=("z", "labels"), paper="diagnostic")
class WarmSupCon(_Diagnostic):
    def __init__(self, temperature: float = 0.1, warm_steps: int = STEPS_PER_EPOCH) -> None:
        super().__init__(temperature)
        self.warm_steps, self.calls = warm_steps, 0

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        self.calls += 1
        if self.calls <= self.warm_steps:
            z_a, z_b = z.chunk(2)
            return CF.nt_xent(z_a, z_b, temperature=0.5)
        return CF.supcon(z, labels, temperature=self.temperature)


@register_loss("diag_supcon_plus_nt_xent", inputs=("z", "labels"), paper="diagnostic")
class SupConPlusNTXent(_Diagnostic):
    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        z_a, z_b = z.chunk(2)
        return CF.supcon(z, labels, temperature=self.temperature) + CF.nt_xent(z_a, z_b, temperature=0.5)


base = V._base(0.2, False)  # 10,000 images
base.update({"train.epochs": 2})
TWO_D = {"model.out_dim": 2}
cases = [
    ("supcon tau=0.1 (report)", "supcon", {"temperature": 0.1}, TWO_D),
    ("supcon tau=0.1 fp32", "supcon", {"temperature": 0.1}, {**TWO_D, "train.precision": "fp32"}),
    ("supcon tau=0.5", "supcon", {"temperature": 0.5}, TWO_D),
    ("supcon tau=0.1 lr=0.05", "supcon", {"temperature": 0.1}, {**TWO_D, "optim.lr": 0.05}),
    ("supcon tau=0.1 dim=128", "supcon", {"temperature": 0.1}, {}),
    ("nt_xent tau=0.5 (report)", "nt_xent", {"temperature": 0.5}, TWO_D),
    ("supcon tau=0.1 linear head", "supcon", {"temperature": 0.1}, {**TWO_D, "model.head": "linear"}),
    ("supcon tau=0.1 shuffled labels", "diag_supcon_shuffled", {"temperature": 0.1}, TWO_D),
    ("nt_xent 1 epoch, then supcon tau=0.1", "diag_warm_supcon", {"temperature": 0.1}, TWO_D),
    ("supcon tau=0.1 + nt_xent tau=0.5", "diag_supcon_plus_nt_xent", {"temperature": 0.1}, TWO_D),
    ("supcon tau=0.1 warm-up over all 78 steps", "supcon", {"temperature": 0.1}, {**TWO_D, "optim.warmup_steps": 78}),
    ("supcon tau=0.1 lr=0.01", "supcon", {"temperature": 0.1}, {**TWO_D, "optim.lr": 0.01}),
    ("supcon tau=0.1 lr=0.01 dim=128", "supcon", {"temperature": 0.1}, {"optim.lr": 0.01}),
    ("cross-entropy (linear classifier)", "supervised_ce", {"dim": 2, "num_classes": 10}, TWO_D),
]


def label_signal(extra: dict, warm: bool) -> dict:
    """SupCon's loss (tau 0.1) on ``BATCHES`` training batches with the true and with permuted labels, in train
    mode (BatchNorm's batch statistics, as the loss sees them in training)."""
    if warm:
        recipe = V._recipe(
            base, "nt_xent", {"temperature": 0.5}, {**extra, "train.epochs": 1, "train.max_steps": STEPS_PER_EPOCH}
        )
        with tempfile.TemporaryDirectory() as folder:
            model = train(recipe, folder, progress=False)["model"]
        task, _, _ = build(recipe, torch.device("cpu"))
    else:
        task, model, _ = build(V._recipe(base, "supcon", {"temperature": 0.1}, extra), torch.device("cpu"))
    model.train()
    gen = torch.Generator().manual_seed(0)
    true, shuffled = [], []
    with torch.no_grad():
        for _ in range(BATCHES):
            index = torch.randperm(task.n_train, generator=gen)[:256]
            views, labels = task.batch(index, slice(None), gen)
            z = model(views).float()
            perm = labels[torch.randperm(labels.shape[0], generator=gen)]
            true.append(float(CF.supcon(z, torch.cat([labels, labels]), temperature=0.1)))
            shuffled.append(float(CF.supcon(z, torch.cat([perm, perm]), temperature=0.1)))
    return {"supcon_true_labels": sum(true) / BATCHES, "supcon_permuted_labels": sum(shuffled) / BATCHES}


def main() -> None:
    done = {r["label"]: r for r in json.loads(OUT.read_text())} if OUT.exists() else {}
    out = list(done.values())
    for label, loss, args, extra in cases:
        if label in done:
            continue
        t = time.time()
        r = V._one(label, loss, args, base, extra)
        row = {k: r[k] for k in ("label", "steps", "alignment", "uniformity", "linear_accuracy", "knn_accuracy")}
        row["output_linear_accuracy"] = r["output_linear_accuracy"]
        losses = [e["loss"] for e in r["log"] if "loss" in e]
        row["last_loss"] = losses[-1] if losses else None
        row["seconds"] = time.time() - t
        out.append(row)
        print(json.dumps(row), flush=True)
        OUT.write_text(json.dumps(out, indent=1) + "\n")
    for label, extra, warm in (
        ("label signal: untrained, 2-d", TWO_D, False),
        ("label signal: after 1 epoch of nt_xent, 2-d", TWO_D, True),
    ):
        if label in done:
            continue
        row = {"label": label, **label_signal(extra, warm), "collapsed_loss": math.log(511)}
        out.append(row)
        print(json.dumps(row), flush=True)
        OUT.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
