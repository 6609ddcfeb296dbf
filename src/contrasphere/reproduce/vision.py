"""Vision, CIFAR-10: encoders spread over the alignment-uniformity plane, what predicts accuracy, and seeds.

Every encoder is the same small convnet (the `small_convnet` encoder, stage widths 16-32-64, MLP head to the
embedding, L2-normalised) trained on CIFAR-10 with the SimCLR augmentation. As the paper's 304 encoders did, the
sweep varies what moves an encoder over the plane: the loss (NT-Xent at temperatures 0.05-1; Wang & Isola's
align + uniform loss with alpha 1 or 2, t 1-8 and alignment/uniformity weight ratios 0.03-30, plus alignment alone
and uniformity alone), the batch size (64-512), the embedding dimension (16-256), the number of steps (100-400)
and the learning rate (0.05-0.8), drawn by a seeded random design. For each encoder: alignment (alpha = 2) of two
augmented views and uniformity (t = 2) of one view, on the first 2,000 test images and of the L2-normalised output
the loss sees, and the accuracy on all 10,000 test images of a linear probe and of a weighted kNN (k = 200)
trained on frozen encoder features of the training images. Spearman and Kendall rank correlations, with bootstrap
intervals over encoders, then say how well each quantity alone, and their sum, orders the encoders by accuracy
(Wang & Isola, Figure 5 and Table 1).

The best loss settings of each family are then trained again at the standard budget (batch 256, 2 epochs,
128-d) with 3 fresh seeds (seed s of both families: the same initialisation and the same images in the same
order), reported as mean +- standard deviation with a paired comparison.

Four further encoders with 2-d outputs show features on the circle, as the paper's Figure 3: untrained, supervised
predictive learning (the encoder and a linear classifier on its 2-d output trained with cross-entropy, the
`supervised_ce` loss), NT-Xent (tau = 0.5, batch 256) and align-uniform; each panel gives the linear accuracy of
its 2-d output features, as the paper's captions do, and their uniformity. (An earlier version used SupCon for the
supervised panel; SupCon collapses at this scale, see `supcon.md`.)
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import viz
from ..pairwise import native_low_precision
from ..train import build, train
from ..train.config import LossConfig, Recipe, updated
from ..train.recipes import get_recipe
from .common import Report, log, scaled, seed_comparison
from .stats import rank_correlations

Changes = dict[str, Any]  # dotted recipe field -> typed value (see contrasphere.train.config.updated)
Point = dict[str, Any]  # one encoder of the sweep: label, loss, args, family and its recipe changes

BATCHES, DIMS, STEPS = (64, 128, 256, 512), (16, 32, 64, 128, 256), (100, 200, 300, 400)
SWEEP_SIZE = 16  # random encoders at budget 1, besides alignment alone and uniformity alone (46-330 s each)
STANDARD: Changes = {"data.batch_size": 256, "model.out_dim": 128, "optim.lr": 0.4}  # 2 epochs: _base's
SEEDS = (1, 2, 3)  # the seed runs; the sweep itself is seed 0


def design(n: int, seed: int = 2020) -> list[Point]:
    """``n`` encoders drawn at random (half NT-Xent, half align-uniform), then alignment alone and uniformity
    alone: the loss's own hyperparameters, batch size, embedding dimension, steps and learning rate all vary."""
    rng = np.random.default_rng(seed)
    points: list[Point] = []
    for i in range(n):
        batch, dim, steps = int(rng.choice(BATCHES)), int(rng.choice(DIMS)), int(rng.choice(STEPS))
        lr = float(np.round(10 ** rng.uniform(math.log10(0.05), math.log10(0.8)), 3))
        if i % 2 == 0:
            tau = float(np.round(10 ** rng.uniform(math.log10(0.05), 0), 3))
            loss, args, family, name = "nt_xent", {"temperature": tau}, "contrastive", f"nt_xent tau={tau:g}"
        else:
            alpha, t = int(rng.choice((1, 2))), int(rng.integers(1, 9))
            w = float(np.round(10 ** rng.uniform(-1.5, 1.5), 3))
            args = {"alpha": alpha, "t": t, "align_weight": w, "uniform_weight": 1}
            loss, family, name = "align_uniform", "align-uniform", f"au alpha={alpha} t={t} w={w:g}"
        points.append(
            _point(f"{name}, b={batch} d={dim} s={steps} lr={lr:g}", loss, args, family, batch, dim, steps, lr)
        )
    for name, w_align, w_uniform in (("alignment only", 1, 0), ("uniformity only", 0, 1)):
        args = {"alpha": 2, "t": 2, "align_weight": w_align, "uniform_weight": w_uniform}
        points.append(
            _point(f"au {name}, b=256 d=128 s=300 lr=0.4", "align_uniform", args, "align-uniform", 256, 128, 300, 0.4)
        )
    return points


def _point(
    label: str, loss: str, args: dict[str, Any], family: str, batch: int, dim: int, steps: int, lr: float
) -> Point:
    changes = {"data.batch_size": batch, "model.out_dim": dim, "train.max_steps": steps, "optim.lr": lr}
    return {"label": label, "loss": loss, "args": args, "family": family, "changes": changes}


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
    began = time.perf_counter()
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
        "seconds": time.perf_counter() - began,
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
        "output_uniformity": results["output"]["uniformity_test_set"],  # of the output the loss sees, all test images
        "_z": tensors.get("test_z"),
        "_y": tensors.get("test_labels"),
        "_classes": results.get("classes"),
    }


def run(out: str | Path, budget: float = 1.0, progress: bool = True) -> dict[str, Any]:
    report = Report(out, "Vision, CIFAR-10: alignment, uniformity and accuracy over a sweep of encoders")
    tiny = budget < 0.1
    base = _base(budget, tiny)
    sweep = design(2 if tiny else max(2, 2 * round(SWEEP_SIZE * budget / 2)))  # budget 2: twice the encoders
    runs = []
    for i, point in enumerate(sweep):
        log(f"  [{i + 1}/{len(sweep)}] {point['label']}", progress)
        # the tiny test budget keeps its 2 steps of 16 images; only the embedding dimension varies there
        extra = {"model.out_dim": point["changes"]["model.out_dim"]} if tiny else point["changes"]
        r = _one(point["label"], point["loss"], point["args"], base, extra)
        r["family"] = point["family"]
        runs.append(r)
        log(
            f"      alignment {r['alignment']:.3f}  uniformity {r['uniformity']:.3f}"
            f"  linear {100 * r['linear_accuracy']:.1f}%  kNN {100 * r['knn_accuracy']:.1f}%  ({r['seconds']:.0f} s)",
            progress,
        )
    # the best loss settings of each family, at the standard budget, over fresh seeds
    best = _best_of(runs)
    seeds = SEEDS if not tiny else SEEDS[:2]
    seed_runs: dict[str, list[dict[str, Any]]] = {}
    for family, r in best.items():
        seed_runs[family] = []
        for seed in seeds:
            log(f"  seed {seed}: {family}, {r['loss']} {r['args']} at the standard budget", progress)
            extra = {**({} if tiny else STANDARD), "train.seed": seed}
            label = r["label"].split(",")[0] + ", standard budget"  # the loss's settings, the standard recipe
            seed_runs[family].append(
                {**_one(label, r["loss"], r["args"], base, extra), "seed": seed, "from": r["label"]}
            )
    # the circle encoders: 2-d outputs
    circle = []
    circle_losses: list[tuple[str, str, dict[str, Any]]] = [
        ("untrained", "align_uniform", {}),
        ("supervised (cross-entropy)", "supervised_ce", {"dim": 2, "num_classes": 10}),
        ("NT-Xent", "nt_xent", {"temperature": 0.5}),
        ("align-uniform", "align_uniform", {"alpha": 2, "t": 2}),
    ]
    two_d = {**({} if tiny else STANDARD), "model.out_dim": 2}
    for label, loss, args in circle_losses:
        log(f"  circle: {label}", progress)
        if label == "untrained":
            task, model, _ = build(_recipe(base, extra=two_d), torch.device("cpu"))
            r = {"label": label, **_summary(*task.evaluate(model))}
        else:
            r = _one(label, loss, args, base, two_d)
        circle.append(r)
    return _write(report, runs, best, seed_runs, circle, base, budget)


def _best_of(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The best sweep encoder (by linear accuracy) of the contrastive and of the align-uniform family."""
    best = {}
    for name, family in (("NT-Xent", "contrastive"), ("align-uniform", "align-uniform")):
        members = [r for r in runs if r["family"] == family]
        if members:
            best[name] = max(members, key=lambda r: r["linear_accuracy"])
    return best


def _clean(r: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in r.items() if not k.startswith("_")}


def _write(
    report: Report,
    runs: list[dict[str, Any]],
    best: dict[str, dict[str, Any]],
    seed_runs: dict[str, list[dict[str, Any]]],
    circle: list[dict[str, Any]],
    base: Changes,
    budget: float,
) -> dict[str, Any]:
    minutes = sum(r["seconds"] for r in runs) / 60
    report.text(
        __doc__.split("\n\n", 1)[1].strip(),
        f"Scale: {len(runs)} sweep encoders in {minutes:.1f} min ({' '.join(f'`{k}={v}`' for k, v in base.items())} "
        "unless the encoder's label says otherwise: b = batch, d = embedding dimension, s = steps, lr = peak "
        "learning rate; recipe `cifar10-align-uniform`, SGD momentum 0.9, cosine schedule). The paper trained each "
        "encoder for 200 epochs of STL-10 / ImageNet-100 on GPUs; these are far shorter, so accuracies are low in "
        "absolute terms.",
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
    seeds = _seeds(report, best, seed_runs)
    _figures(report, runs, circle)
    report.text("2-d encoders (features on the circle; the standard budget):")
    report.table(
        [
            "encoder",
            "alignment",
            "uniformity (held-out)",
            "uniformity (2-d output, test set)",
            "2-d output linear acc. (%)",
            "encoder linear acc. (%)",
        ],
        [
            [
                r["label"],
                r["alignment"],
                r["uniformity"],
                r["output_uniformity"],
                100 * r["output_linear_accuracy"],
                100 * r["linear_accuracy"],
            ]
            for r in circle
        ],
    )
    return report.save(
        {
            "experiment": "vision",
            "budget": budget,
            "base_changes": base,
            "runs": [_clean(r) for r in runs],
            "seed_runs": {k: [_clean(r) for r in v] for k, v in seed_runs.items()},
            "seeds": seeds,
            "circle": [_clean(r) for r in circle],
            "correlations": correlations,
            "best": {k: r["label"] for k, r in best.items()},
        }
    )


PREDICTORS = ("alignment", "uniformity", "alignment + uniformity")


def _predictor(r: dict[str, Any], name: str) -> float:
    return float(r["alignment"] + r["uniformity"] if name == "alignment + uniformity" else r[name])


COLLAPSED = -0.01  # held-out uniformity above this: every output at one point (mean Gaussian potential > 0.99)


def _correlations(report: Report, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Spearman and Kendall correlation of accuracy with minus alignment, uniformity and their sum, over the
    sweep, with bootstrap intervals; again without the collapsed encoders (whose alignment is a perfect 0); and how
    far apart the sweep put the two quantities."""
    if len(runs) < 3:
        return {}
    out = _rank_table(runs)
    report.text(
        "Rank correlation of accuracy with *minus* each quantity over the sweep (positive: lower alignment / "
        "uniformity goes with higher accuracy, as the paper finds), with 95% percentile bootstrap intervals over "
        "encoders (2,000 resamples):"
    )
    _rank_report(report, out)
    live = [r for r in runs if r["uniformity"] < COLLAPSED]
    if len(runs) - len(live) and len(live) >= 3:
        out["without collapsed"] = {"encoders": len(live), **_rank_table(live)}
        report.text(
            f"The same without the {len(runs) - len(live)} collapsed encoders (held-out uniformity above "
            f"{COLLAPSED}: every output at one point, so alignment is a perfect 0 and accuracy is lowest), "
            f"{len(live)} encoders:"
        )
        _rank_report(report, out["without collapsed"])
    out["alignment vs uniformity"] = rank_correlations([r["alignment"] for r in runs], [r["uniformity"] for r in runs])
    between = out["alignment vs uniformity"]
    report.text(
        "How independently the sweep moved the two quantities: Spearman rho of alignment with uniformity across "
        f"encoders {_with_ci(between['spearman'])}, Kendall tau {_with_ci(between['kendall'])}; alignment ranges "
        f"{min(r['alignment'] for r in runs):.3f}-{max(r['alignment'] for r in runs):.3f}, uniformity "
        f"{min(r['uniformity'] for r in runs):.3f}-{max(r['uniformity'] for r in runs):.3f}."
    )
    return out


def _rank_table(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        metric: {p: rank_correlations([-_predictor(r, p) for r in runs], [r[metric] for r in runs]) for p in PREDICTORS}
        for metric in ("linear_accuracy", "knn_accuracy")
    }


def _rank_report(report: Report, table: dict[str, Any]) -> None:
    report.table(
        ["accuracy", "predictor", "Spearman rho [95% CI]", "Kendall tau [95% CI]"],
        [
            [metric, p, _with_ci(table[metric][p]["spearman"]), _with_ci(table[metric][p]["kendall"])]
            for metric in ("linear_accuracy", "knn_accuracy")
            for p in PREDICTORS
        ],
    )


def _with_ci(c: dict[str, Any]) -> str:
    return f"{c['value']:.2f} [{c['ci'][0]:.2f}, {c['ci'][1]:.2f}]"


def _seeds(
    report: Report, best: dict[str, dict[str, Any]], seed_runs: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """Mean +- std over the seeds of each family's best settings, and their paired comparison."""
    if len(seed_runs) < 2:
        return {}
    metrics = {"linear_accuracy": "linear acc. (%)", "knn_accuracy": "kNN acc. (%)", "alignment": "alignment",
               "uniformity": "uniformity"}  # fmt: skip
    scale = {"linear_accuracy": 100, "knn_accuracy": 100, "alignment": 1, "uniformity": 1}
    (a, rows_a), (b, _) = seed_runs.items()
    seeds = [r["seed"] for r in rows_a]
    report.text(
        f"Best settings of each family (by linear accuracy in the sweep: {a} `{best[a]['label']}`, {b} "
        f"`{best[b]['label']}`), trained again at the standard budget (`data.batch_size=256`, `model.out_dim=128`, "
        f"`optim.lr=0.4`, 2 epochs) with seeds {', '.join(map(str, seeds))}; mean +- sample standard deviation, and "
        f"the paired difference {b} - {a} with its 95% t interval over seeds (*exceeds seed noise* when the interval "
        "excludes 0):"
    )
    values = {family: {m: [scale[m] * r[m] for r in rows] for m in metrics} for family, rows in seed_runs.items()}
    summary, comparison = seed_comparison(report, "quantity", metrics, values, digits=3)
    report.table(
        ["family", *(f"seed {s} linear / kNN (%)" for s in seeds)],
        [
            [family, *(f"{100 * r['linear_accuracy']:.2f} / {100 * r['knn_accuracy']:.2f}" for r in rows)]
            for family, rows in seed_runs.items()
        ],
    )
    return {"summary": summary, "comparison": {"difference": f"{b} - {a}", "quantities": comparison}}


def _figures(report: Report, runs: list[dict[str, Any]], circle: list[dict[str, Any]]) -> None:
    """The alignment-uniformity plane and the circle panels (needs matplotlib)."""
    try:
        report.figure(
            viz.plot_align_uniform(
                [{**r, "accuracy": 100 * r["linear_accuracy"]} for r in runs],
                report.folder / "vision_align_uniform.png",
                title="CIFAR-10 encoders",
            ),
            "Held-out alignment vs uniformity, coloured by linear accuracy (%)",
        )
        panels = [
            {
                "z": r["_z"],
                "labels": r["_y"],
                "title": f"{r['label']}\nlinear {100 * r['output_linear_accuracy']:.1f}% (2-d), "
                f"uniformity {r['output_uniformity']:.2f}",
            }
            for r in circle
        ]
        report.figure(
            viz.plot_circles(panels, report.folder / "vision_circle.png", class_names=circle[0]["_classes"]),
            "CIFAR-10 test features on S^1 (2-d outputs, points in a random order so that no class hides another) "
            "and the vMF KDE of their angles, kappa = 25: all points (black) and each class",
        )
    except ImportError:
        pass
