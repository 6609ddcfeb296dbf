"""Language: unsupervised SimCSE fine-tuning of all-MiniLM-L6-v2 with InfoNCE and with align-uniform.

Each sentence of SimCSE's Wikipedia corpus (the 11,913-sentence head of wiki1m shipped in ../shared/data) is
encoded twice with dropout on (the two dropout masks make the positive pair) and the encoder is fine-tuned with
InfoNCE (tau = 0.05, SimCSE's choice) or with Wang & Isola's align + uniform loss (alpha = 2, t = 2, equal
weights). Both runs start from the same pretrained weights and see the same sentences in the same order.
Measured before and after: Spearman correlation x 100 between cosine similarity and gold scores on STS-B dev and
test and on STS12-16 (all subsets concatenated per year, the organisers' raw text), and, every few steps during
training, alignment of STS-B dev pairs with gold score above 4 and uniformity of STS-B dev sentences (SimCSE's
Figure 2 protocol).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from .. import viz
from ..train import build, train
from ..train.config import LossConfig, Recipe, updated
from ..train.recipes import get_recipe
from .common import Report, log, scaled

LOSSES: dict[str, dict[str, Any]] = {"info_nce": {"temperature": 0.05}, "align_uniform": {"alpha": 2, "t": 2}}
STS_SETS = ("stsb", "sts12", "sts13", "sts14", "sts15", "sts16")  # STS-B: dev and test; the others: test
AVERAGE = "avg STS12-16 + STS-B test"


def _recipe(loss: str, budget: float) -> Recipe:
    """``simcse-wiki`` (MiniLM, dropout views, AdamW 3e-5), held-out alignment and uniformity every few steps."""
    tiny = budget < 0.2  # the tests: batch 8, the first 40 pairs of each STS set
    steps = scaled(150, budget, 2)
    return updated(
        get_recipe("simcse-wiki"),
        {
            "loss": LossConfig(loss, dict(LOSSES[loss])),
            "data.batch_size": 8 if tiny else 64,
            "data.test_samples": 40 if tiny else 0,
            "train.max_steps": steps,
            "train.heldout_every": max(1, steps // 10),
            "train.heldout_samples": 100 if tiny else 1500,
            "eval.sts_sets": STS_SETS,
            "eval.plots": False,
        },
    )


def _sts(results: dict[str, Any]) -> dict[str, float]:
    scores = dict(results["sts"])
    scores[AVERAGE] = sum(v for k, v in scores.items() if k != "stsb-dev") / (len(scores) - 1)
    return scores


def run(out: str | Path, budget: float = 1.0, progress: bool = True) -> dict[str, Any]:
    report = Report(out, "Language: SimCSE with InfoNCE vs align-uniform, all-MiniLM-L6-v2 on Wikipedia sentences")
    first = _recipe("info_nce", budget)
    steps, batch, track_every = first.train.max_steps, first.data.batch_size, first.train.heldout_every
    log("  evaluating the pretrained encoder on STS", progress)
    task, pretrained, _ = build(first, torch.device("cpu"))
    results = task.evaluate(pretrained)[0]
    runs: dict[str, Any] = {"pretrained": {"sts": _sts(results), **results["heldout"]}}
    del task, pretrained
    for name in LOSSES:
        log(f"  fine-tuning with {name}: {steps} steps of {batch} sentences", progress)
        with tempfile.TemporaryDirectory() as folder:
            result = train(_recipe(name, budget), folder, progress=progress)
        history = [{k: r[k] for k in ("step", "loss", "alignment", "uniformity") if k in r} for r in result["log"]]
        runs[name] = {"sts": _sts(result["task"].evaluate(result["model"])[0]), "history": history}
        del result
    n_pairs = first.train.heldout_samples
    report.text(
        __doc__.split("\n\n", 1)[1].strip(),
        f"Setting: {steps} steps, batch {batch} sentences (each twice), AdamW lr 3e-5, max 32 tokens, mean "
        f"pooling (MiniLM's own), seed 0; recipe `simcse-wiki` on the one training loop. Alignment/uniformity are "
        f"measured every {track_every} steps on the first {n_pairs} STS-B dev pairs: alignment of those with gold "
        "score above 4, uniformity of all their sentences. "
        "SimCSE trained BERT-base for 1 epoch of 1M sentences with batch 64 (15,625 steps); this is a reduced scale.",
    )
    names = list(runs["pretrained"]["sts"])
    report.table(["encoder", *names], [[k, *(r["sts"][n] for n in names)] for k, r in runs.items()])
    rows = [["pretrained", 0, runs["pretrained"]["alignment"], runs["pretrained"]["uniformity"]]]
    rows += [
        [k, r["history"][-1]["step"], r["history"][-1]["alignment"], r["history"][-1]["uniformity"]]
        for k, r in runs.items()
        if k != "pretrained"
    ]
    report.table(["encoder", "steps", "alignment (dev pairs > 4)", "uniformity (dev)"], rows)
    try:
        report.figure(
            viz.plot_paths(
                {k: r["history"] for k, r in runs.items() if k != "pretrained"},
                report.folder / "language_align_uniform.png",
                start=runs["pretrained"],
            ),
            "Alignment and uniformity over fine-tuning (SimCSE Figure 2 style); lower is better for both",
        )
    except ImportError:
        pass
    return report.save({"experiment": "language", "budget": budget, "steps": steps, "batch": batch, "runs": runs})
