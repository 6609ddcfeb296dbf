"""Language: unsupervised SimCSE fine-tuning of all-MiniLM-L6-v2 with InfoNCE and with align-uniform.

Each sentence of SimCSE's Wikipedia corpus (the 11,913-sentence head of wiki1m shipped in ../shared/data) is
encoded twice with dropout on (the two dropout masks make the positive pair) and the encoder is fine-tuned with
InfoNCE (tau = 0.05, SimCSE's choice) or with Wang & Isola's align + uniform loss (alpha = 2, t = 2, equal
weights). Both runs start from the same pretrained weights and see the same sentences in the same order.
Measured before and after: Spearman correlation x 100 between cosine similarity and gold scores on STS-B dev and
test and on STS12-16 (all subsets concatenated per year, the organisers' raw text), and, every few steps during
training, alignment of STS-B dev pairs with gold score above 4 and uniformity of STS-B dev sentences (SimCSE's
Figure 2 protocol). Training truncates sentences at 32 tokens for speed; every score and measurement encodes at the
encoder's own maximum (256 tokens for all-MiniLM-L6-v2, `eval.max_length=0`), so the pretrained row is comparable
with the encoder's published MTEB scores. Each fine-tune is repeated over seeds (the order of the sentences and the
dropout masks; seed s of InfoNCE and of align-uniform see the same sentences in the same order), reported as mean
+- standard deviation with a paired comparison.
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
from .common import Report, log, scaled, seed_comparison

LOSSES: dict[str, dict[str, Any]] = {"info_nce": {"temperature": 0.05}, "align_uniform": {"alpha": 2, "t": 2}}
STS_SETS = ("stsb", "sts12", "sts13", "sts14", "sts15", "sts16")  # STS-B: dev and test; the others: test
AVERAGE = "avg STS12-16 + STS-B test"
# all-MiniLM-L6-v2's published scores (Spearman x 100 of cosine similarity): MTEB's own results for the model,
# github.com/embeddings-benchmark/mtebpaper results/all-MiniLM-L6-v2/*.json (commit 28debbe), test splits and the
# STS-B validation split; MTEB encodes with sentence-transformers at the model's max_seq_length, 256 tokens
PUBLISHED = {
    "stsb-dev": 86.716,
    "stsb-test": 82.032,
    "sts12": 72.369,
    "sts13": 80.603,
    "sts14": 75.589,
    "sts15": 85.390,
    "sts16": 78.989,
}


def _recipe(loss: str, budget: float, seed: int = 0) -> Recipe:
    """``simcse-wiki`` (MiniLM, dropout views, AdamW 3e-5); seed 0 also tracks held-out alignment and uniformity
    every few steps (the figure), the other seeds only at the end."""
    tiny = budget < 0.2  # the tests: batch 8, the first 40 pairs of each STS set
    steps = scaled(150, budget, 2)
    return updated(
        get_recipe("simcse-wiki"),
        {
            "loss": LossConfig(loss, dict(LOSSES[loss])),
            "data.batch_size": 8 if tiny else 64,
            "data.test_samples": 40 if tiny else 0,
            "train.max_steps": steps,
            "train.seed": seed,
            "train.heldout_every": max(1, steps // 10) if seed == 0 else 0,
            "train.heldout_samples": 100 if tiny else 1500,
            "eval.sts_sets": STS_SETS,
            "eval.max_length": 0,  # the encoder's own maximum
            "eval.plots": False,
        },
    )


def seeds_for(budget: float) -> tuple[int, ...]:
    """Seeds of each fine-tune: 3 at the standard budget (more with a larger one), 2 in the tiny test runs."""
    return tuple(range(2 if budget < 0.2 else max(3, round(3 * budget))))


def _sts(results: dict[str, Any]) -> dict[str, float]:
    scores = dict(results["sts"])
    scores[AVERAGE] = sum(v for k, v in scores.items() if k != "stsb-dev") / (len(scores) - 1)
    return scores


def run(out: str | Path, budget: float = 1.0, progress: bool = True) -> dict[str, Any]:
    report = Report(out, "Language: SimCSE with InfoNCE vs align-uniform, all-MiniLM-L6-v2 on Wikipedia sentences")
    first = _recipe("info_nce", budget)
    steps, batch, track_every = first.train.max_steps, first.data.batch_size, first.train.heldout_every
    seeds = seeds_for(budget)
    log("  evaluating the pretrained encoder on STS", progress)
    task, pretrained, _ = build(first, torch.device("cpu"))
    results = task.evaluate(pretrained)[0]
    eval_tokens = results["max_length"]
    runs: dict[str, Any] = {"pretrained": {"sts": _sts(results), **results["heldout"]}}
    del task, pretrained
    per_seed: dict[str, list[dict[str, Any]]] = {name: [] for name in LOSSES}
    for seed in seeds:
        for name in LOSSES:
            log(f"  fine-tuning with {name}, seed {seed}: {steps} steps of {batch} sentences", progress)
            with tempfile.TemporaryDirectory() as folder:
                result = train(_recipe(name, budget, seed), folder, progress=progress)
            history = [{k: r[k] for k in ("step", "loss", "alignment", "uniformity") if k in r} for r in result["log"]]
            evaluated = result["task"].evaluate(result["model"])[0]
            per_seed[name].append({"seed": seed, "sts": _sts(evaluated), **evaluated["heldout"], "history": history})
            del result
    for name in LOSSES:  # seed 0 keeps the name it always had, with its tracked history
        runs[name] = per_seed[name][0]
    names = list(runs["pretrained"]["sts"])
    a, b = LOSSES
    n_pairs = first.train.heldout_samples
    report.text(
        __doc__.split("\n\n", 1)[1].strip(),
        f"Setting: {steps} steps, batch {batch} sentences (each twice), AdamW lr 3e-5, training truncated at "
        f"{first.data.max_length} tokens, every number below encoded at {eval_tokens} tokens; mean pooling "
        f"(MiniLM's own); seeds {', '.join(map(str, seeds))}; recipe `simcse-wiki` on the one training loop. "
        f"Alignment/uniformity are measured every {track_every} steps (seed 0; the other seeds at the end) on the "
        f"first {n_pairs} STS-B dev pairs: alignment of those with gold "
        "score above 4, uniformity of all their sentences. "
        "SimCSE trained BERT-base for 1 epoch of 1M sentences with batch 64 (15,625 steps); this is a reduced scale.",
    )
    published = _sts({"sts": PUBLISHED})  # with the same average
    report.text(f"STS Spearman x 100 (seed 0; {eval_tokens} tokens):")
    report.table(
        ["encoder", *names],
        [
            *([k, *(r["sts"][n] for n in names)] for k, r in runs.items()),
            ["published (MTEB, 256 tokens)", *(published[n] for n in names)],
        ],
    )
    report.text(
        f"Over {len(seeds)} seeds, mean +- standard deviation, and the paired difference {b} - {a} (mean, 95% t "
        "interval over seeds; *exceeds seed noise* when the interval excludes 0):"
    )
    values = {name: {k: [r["sts"][k] for r in rows] for k in names} for name, rows in per_seed.items()}
    summary, comparison = seed_comparison(report, "set", {k: k for k in names}, values)
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
            "Alignment and uniformity over fine-tuning (SimCSE Figure 2 style, seed 0); lower is better for both",
        )
    except ImportError:
        pass
    return report.save(
        {
            "experiment": "language",
            "budget": budget,
            "steps": steps,
            "batch": batch,
            "train_max_length": first.data.max_length,
            "eval_max_length": eval_tokens,
            "seeds": list(seeds),
            "published": PUBLISHED,
            "runs": runs,
            "seed_runs": per_seed,
            "summary": summary,
            "comparison": {"difference": f"{b} - {a}", "sets": comparison},
        }
    )
