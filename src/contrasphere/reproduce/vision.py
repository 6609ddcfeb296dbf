"""Vision, CIFAR-10: a sweep of encoders trained with NT-Xent and with align-uniform, and what predicts accuracy.

Every encoder is the same small convnet (the `small_convnet` encoder, stage widths 16-32-64, MLP head to 128-d,
L2-normalised) trained from the same initialisation on the same CIFAR-10 images with the SimCLR augmentation;
only the loss differs: NT-Xent over a range of temperatures, and the paper's align + uniform loss over its alpha,
t and the ratio of the two weights (including alignment alone and uniformity alone). For each encoder: alignment
(alpha = 2) of two augmented views and uniformity (t = 2) of one view, on the first 2,000 test images and of the
L2-normalised output the loss sees, and the accuracy on all 10,000 test images of a linear probe and of a weighted
kNN (k = 200) trained on frozen encoder features of the training images. Spearman rank correlations then say how
well each quantity, and their sum, orders the encoders by accuracy (Wang & Isola, Figure 5 and Table 1).

Four further encoders with 2-d outputs show features on the circle, as the paper's Figure 3: untrained, supervised
predictive learning (the encoder and a linear classifier on its 2-d output trained with cross-entropy, the
`supervised_ce` loss), NT-Xent (tau = 0.5, batch 256) and align-uniform; each panel gives the linear accuracy of
its 2-d output features, as the paper's captions do, and their uniformity. (An earlier version used SupCon for the
supervised panel; SupCon collapses at this scale, see `supcon_diagnostic.json` and
`scripts/supcon_collapse_diagnostic.py`.)
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import viz
from ..evaluation import spearman
from ..pairwise import native_low_precision
from ..train import build, train
from ..train.config import LossConfig, Recipe, updated
from ..train.recipes import get_recipe
from .common import Report, log, scaled

# (label, loss, arguments, family); the trade-off sweep varies align_weight with uniform_weight = 1
SWEEP: list[tuple[str, str, dict[str, Any], str]] = [
    *[
        (f"nt_xent tau={tau:g}", "nt_xent", {"temperature": tau}, "contrastive")
        for tau in (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0, 2.0)
    ],
    *[
        (
            f"au alpha=2 t=2 w={w:g}",
            "align_uniform",
            {"alpha": 2, "t": 2, "align_weight": w, "uniform_weight": 1},
            "ratio",
        )
        for w in (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    ],
    ("au uniformity only", "align_uniform", {"alpha": 2, "t": 2, "align_weight": 0, "uniform_weight": 1}, "ratio"),
    ("au alignment only", "align_uniform", {"alpha": 2, "t": 2, "align_weight": 1, "uniform_weight": 0}, "ratio"),
    *[
        (f"au alpha={a} t={t}", "align_uniform", {"alpha": a, "t": t}, "alpha-t")
        for a in (1, 2)
        for t in (1, 3, 5)
        if (a, t) != (2, 2)
    ],
    ("au alpha=1 t=2", "align_uniform", {"alpha": 1, "t": 2}, "alpha-t"),
]


Changes = dict[str, Any]  # dotted recipe field -> typed value (see contrasphere.train.config.updated)


def _base(budget: float, tiny: bool) -> Changes:
    """The changes to ``cifar10-align-uniform`` that every encoder of the sweep shares."""
    # budget 1: all 50,000 training images, 2 epochs (about 80 s per encoder on 2 cores); larger budgets add epochs
    return {
        "model.widths": (16, 32, 64),
        "model.head_hidden": 256,
        "data.train_samples": 64 if tiny else scaled(50000, min(budget, 1.0), 1000),
        "data.test_samples": 48 if tiny else 0,
        "data.batch_size": 16 if tiny else 256,
        "train.epochs": 1 if tiny else max(1, round(2 * budget)),
        "train.max_steps": 2 if tiny else 0,
        # bf16 only where the CPU multiplies it natively (emulated bf16 is ~75x slower than fp32)
        "train.precision": "bf16" if native_low_precision(torch.device("cpu"), torch.bfloat16) else "fp32",
        "optim.lr": 0.4,
        "optim.warmup_steps": 10,
        "train.heldout_samples": 48 if tiny else 2000,
        "eval.plots": False,
        "eval.probe_epochs": 5 if tiny else 50,
    }


def _recipe(
    base: Changes, loss: str | None = None, args: dict[str, Any] | None = None, extra: Changes | None = None
) -> Recipe:
    """``cifar10-align-uniform`` with the shared changes, another loss (from its defaults) and ``extra`` ones."""
    changes = {**base, **(extra or {})}
    if loss is not None:
        changes["loss"] = LossConfig(loss, dict(args or {}))
    return updated(get_recipe("cifar10-align-uniform"), changes)


def _one(label: str, loss: str, args: dict[str, Any], base: Changes, extra: Changes | None = None) -> dict[str, Any]:
    recipe = _recipe(base, loss, args, extra)
    with tempfile.TemporaryDirectory() as folder:
        result = train(recipe, folder, progress=False)
    results, tensors = result["task"].evaluate(result["model"])
    return {
        "label": label,
        "loss": loss,
        "args": args,
        "changes": extra or {},
        "steps": result["step"],
        **_summary(results, tensors),
        "log": result["log"],
    }


def _summary(results: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What the report needs of one evaluation; ``_``-keys hold the 2-d test features for the circle figure."""
    return {
        "alignment": results["heldout"]["alignment"],
        "uniformity": results["heldout"]["uniformity"],
        "linear_accuracy": results["encoder"]["linear_probe"]["test_accuracy"],
        "knn_accuracy": results["encoder"]["knn_accuracy"],
        "output_linear_accuracy": results["output"]["linear_probe"]["test_accuracy"],
        "uniformity_2d": results["output"]["uniformity_test_set"],
        "_z": tensors.get("test_z"),
        "_y": tensors.get("test_labels"),
    }


def run(out: str | Path, budget: float = 1.0, progress: bool = True) -> dict[str, Any]:
    report = Report(out, "Vision, CIFAR-10: alignment, uniformity and accuracy over a sweep of encoders")
    tiny = budget < 0.1
    base = _base(budget, tiny)
    n_sweep = len(SWEEP) if budget >= 1 else max(3, round(len(SWEEP) * budget))
    pick = np.unique(np.linspace(0, len(SWEEP) - 1, n_sweep).round().astype(int))
    sweep = [SWEEP[i] for i in pick]
    runs = []
    for i, (label, loss, args, family) in enumerate(sweep):
        log(f"  [{i + 1}/{len(sweep)}] {label}", progress)
        r = _one(label, loss, args, base)
        r["family"] = family
        runs.append(r)
        log(
            f"      alignment {r['alignment']:.3f}  uniformity {r['uniformity']:.3f}"
            f"  linear {100 * r['linear_accuracy']:.1f}%  kNN {100 * r['knn_accuracy']:.1f}%",
            progress,
        )
    # the circle encoders: 2-d outputs
    circle = []
    circle_losses: list[tuple[str, str, dict[str, Any]]] = [
        ("untrained", "align_uniform", {}),
        ("supervised (cross-entropy)", "supervised_ce", {"dim": 2, "num_classes": 10}),
        ("NT-Xent", "nt_xent", {"temperature": 0.5}),
        ("align-uniform", "align_uniform", {"alpha": 2, "t": 2}),
    ]
    for label, loss, args in circle_losses:
        log(f"  circle: {label}", progress)
        if label == "untrained":
            task, model, _ = build(_recipe(base, extra={"model.out_dim": 2}), torch.device("cpu"))
            r = {"label": label, **_summary(*task.evaluate(model))}
        else:
            r = _one(label, loss, args, base, {"model.out_dim": 2})
        circle.append(r)
    return _write(report, runs, circle, base, budget)


def _write(
    report: Report, runs: list[dict[str, Any]], circle: list[dict[str, Any]], base: Changes, budget: float
) -> dict[str, Any]:
    steps = runs[0]["steps"]
    report.text(
        __doc__.split("\n\n", 1)[1].strip(),
        f"Scale: {len(runs)} encoders, each {steps} steps ({' '.join(f'`{k}={v}`' for k, v in base.items())}; recipe "
        "`cifar10-align-uniform`, SGD momentum 0.9, cosine schedule). The paper trained each encoder for 200 "
        "epochs of STL-10 / ImageNet-100 on GPUs; this sweep is far shorter, so accuracies are low in absolute "
        "terms and the comparison is between encoders trained equally briefly.",
    )
    rows = sorted(runs, key=lambda r: -r["linear_accuracy"])
    report.table(
        ["encoder", "alignment", "uniformity", "linear acc. (%)", "kNN acc. (%)"],
        [
            [r["label"], r["alignment"], r["uniformity"], 100 * r["linear_accuracy"], 100 * r["knn_accuracy"]]
            for r in rows
        ],
    )
    correlations = _correlations(report, runs)
    best = _best(report, runs)
    _figures(report, runs, circle)
    report.text("2-d encoders (features on the circle):")
    report.table(
        [
            "encoder",
            "alignment",
            "uniformity (held-out)",
            "uniformity (test set, 2-d)",
            "2-d output linear acc. (%)",
            "encoder linear acc. (%)",
        ],
        [
            [
                r["label"],
                r["alignment"],
                r["uniformity"],
                r["uniformity_2d"],
                100 * r["output_linear_accuracy"],
                100 * r["linear_accuracy"],
            ]
            for r in circle
        ],
    )
    clean = [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]
    clean_circle = [{k: v for k, v in r.items() if not k.startswith("_")} for r in circle]
    return report.save(
        {
            "experiment": "vision",
            "budget": budget,
            "base_changes": base,
            "runs": clean,
            "circle": clean_circle,
            "correlations": correlations,
            "best": {k: r["label"] for k, r in best.items()},
        }
    )


def _correlations(report: Report, runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Spearman correlation of accuracy with minus alignment, uniformity and their sum, over the sweep."""
    correlations: dict[str, dict[str, float]] = {}
    if len(runs) < 3:
        return correlations
    for metric in ("linear_accuracy", "knn_accuracy"):
        acc = [r[metric] for r in runs]
        correlations[metric] = {
            "alignment": -spearman([r["alignment"] for r in runs], acc),
            "uniformity": -spearman([r["uniformity"] for r in runs], acc),
            "alignment + uniformity": -spearman([r["alignment"] + r["uniformity"] for r in runs], acc),
        }
    report.text(
        "Rank correlation (Spearman) of accuracy with *minus* each quantity (positive: lower alignment / "
        "uniformity goes with higher accuracy, as the paper finds):"
    )
    report.table(
        ["accuracy", "-alignment", "-uniformity", "-(alignment + uniformity)"],
        [[m, *c.values()] for m, c in correlations.items()],
    )
    return correlations


def _best(report: Report, runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The best encoder (by linear accuracy) of the contrastive and of the align-uniform family."""
    best = {}
    for name, contrastive in (("NT-Xent", True), ("align-uniform", False)):
        members = [r for r in runs if (r["family"] == "contrastive") == contrastive]
        if members:
            best[name] = max(members, key=lambda r: r["linear_accuracy"])
    if best:
        report.text("Best of each family (by linear accuracy):")
        report.table(
            ["family", "encoder", "linear acc. (%)", "kNN acc. (%)", "alignment", "uniformity"],
            [
                [k, r["label"], 100 * r["linear_accuracy"], 100 * r["knn_accuracy"], r["alignment"], r["uniformity"]]
                for k, r in best.items()
            ],
        )
    return best


def _figures(report: Report, runs: list[dict[str, Any]], circle: list[dict[str, Any]]) -> None:
    """The alignment-uniformity plane, the weight-ratio trade-off and the circle panels (needs matplotlib)."""
    ratio = sorted([r for r in runs if r["family"] == "ratio"], key=lambda r: _ratio(r))
    try:
        report.figure(
            viz.plot_align_uniform(
                [{**r, "accuracy": 100 * r["linear_accuracy"]} for r in runs],
                report.folder / "vision_align_uniform.png",
                title="CIFAR-10 encoders",
            ),
            "Held-out alignment vs uniformity, coloured by linear accuracy (%)",
        )
        if len(ratio) >= 2:
            finite = [r for r in ratio if 0 < _ratio(r) < math.inf]
            report.figure(
                viz.plot_sweep(
                    [_ratio(r) for r in finite],
                    {
                        "linear": [100 * r["linear_accuracy"] for r in finite],
                        "kNN": [100 * r["knn_accuracy"] for r in finite],
                    },
                    report.folder / "vision_tradeoff.png",
                    xlabel="align_weight / uniform_weight (alpha = 2, t = 2)",
                    ylabel="accuracy (%)",
                    baselines={
                        r["label"].replace("au ", ""): 100 * r["linear_accuracy"] for r in ratio if r not in finite
                    },
                    log_x=True,
                ),
                "Accuracy against the ratio of alignment to uniformity weight",
            )
        panels = [
            {
                "z": r["_z"],
                "labels": r["_y"],
                "title": f"{r['label']}\nlinear {100 * r['output_linear_accuracy']:.1f}% (2-d), "
                f"uniformity {r['uniformity_2d']:.2f}",
            }
            for r in circle
        ]
        report.figure(
            viz.plot_circles(panels, report.folder / "vision_circle.png"),
            "CIFAR-10 test features on S^1 (2-d outputs) and the vMF KDE of their angles, kappa = 25",
        )
    except ImportError:
        pass


def _ratio(r: dict[str, Any]) -> float:
    a, u = r["args"]["align_weight"], r["args"]["uniform_weight"]
    return math.inf if u == 0 else a / u
