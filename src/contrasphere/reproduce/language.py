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

import time
from pathlib import Path
from typing import Any

import torch

from ..train import data as D
from .. import evaluation, metrics
from ..losses import create_loss
from ..train.models import TextEncoder
from .common import Report, log, scaled

LOSSES = {"info_nce": {"temperature": 0.05}, "align_uniform": {"alpha": 2, "t": 2}}
STS_SETS = [("stsb", "dev"), ("stsb", "test"), ("sts12", "test"), ("sts13", "test"), ("sts14", "test"),
            ("sts15", "test"), ("sts16", "test")]  # fmt: skip


@torch.no_grad()
def _embed(model: TextEncoder, sentences: list[str], batch: int = 128) -> torch.Tensor:
    was = model.training
    model.eval()
    out = torch.cat([model(sentences[i : i + batch]) for i in range(0, len(sentences), batch)])
    model.train(was)
    return out


def _sts(model: TextEncoder, sets: dict[str, D.SentencePairs]) -> dict[str, float]:
    scores = {}
    for name, pairs in sets.items():
        scores[name] = 100 * evaluation.sts_spearman(_embed(model, pairs.a), _embed(model, pairs.b), pairs.scores)
    scores["avg STS12-16 + STS-B test"] = sum(v for k, v in scores.items() if k != "stsb-dev") / (len(scores) - 1)
    return scores


def _track(model: TextEncoder, a: list[str], b: list[str], sentences: list[str]) -> dict[str, float]:
    """Alignment of the positive pairs ``a[i], b[i]`` and uniformity of ``sentences``."""
    return {
        "alignment": metrics.alignment(_embed(model, a), _embed(model, b), alpha=2),
        "uniformity": metrics.uniformity(_embed(model, sentences), t=2),
    }


def finetune(
    loss_name: str, sentences: list[str], *, steps: int, batch: int, track_every: int, track: Any, seed: int = 0,
    lr: float = 3e-5, progress: bool = True, start: dict[str, float] | None = None,
) -> tuple[TextEncoder, list[dict[str, float]]]:  # fmt: skip
    """``start``: the tracked quantities of the pretrained weights, where the caller has measured them already."""
    model = TextEncoder(max_length=32)
    loss_fn = create_loss(loss_name, **LOSSES[loss_name])
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    order = torch.randperm(len(sentences), generator=torch.Generator().manual_seed(seed))
    history = [{"step": 0, **(start if start is not None else track(model))}]
    model.train()
    began = time.perf_counter()
    for step in range(1, steps + 1):
        torch.manual_seed(seed * 100_003 + step)  # the dropout masks of this step
        index = order[((step - 1) * batch) % len(sentences) :][:batch]
        chosen = [sentences[i] for i in index.tolist()]
        z = torch.nn.functional.normalize(model(chosen + chosen), dim=1)
        loss = loss_fn(z[: len(chosen)], z[len(chosen) :])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % track_every == 0 or step == steps:
            history.append({"step": step, "loss": loss.item(), **track(model)})
            rate = step / (time.perf_counter() - began)
            log(f"    {loss_name} step {step}/{steps}  loss {loss.item():.4f}  {rate:.2f} step/s  "
                f"eta {(steps - step) / rate:.0f}s", progress)  # fmt: skip
    return model, history


def run(out: str | Path, budget: float = 1.0, progress: bool = True) -> dict[str, Any]:
    report = Report(out, "Language: SimCSE with InfoNCE vs align-uniform, all-MiniLM-L6-v2 on Wikipedia sentences")
    tiny = budget < 0.2
    steps, batch = scaled(150, budget, 2), 64 if not tiny else 8
    track_every = max(1, steps // 10)
    sentences = D.wiki_sentences()
    sets = {f"{n}-{s}" if n == "stsb" else n: D.sts(n, s) for n, s in STS_SETS}
    if tiny:  # the tests: a few pairs per set
        sets = {k: D.SentencePairs(v.a[:40], v.b[:40], v.scores[:40]) for k, v in sets.items()}
    dev = sets["stsb-dev"]
    tracked = list(dict.fromkeys(dev.a + dev.b))
    track_sentences = tracked[: 1000 if not tiny else 60]

    positive = (dev.scores > 4).tolist()
    positive_a = [s for s, p in zip(dev.a, positive) if p]
    positive_b = [s for s, p in zip(dev.b, positive) if p]

    def track(model: TextEncoder) -> dict[str, float]:
        return _track(model, positive_a, positive_b, track_sentences)

    log("  evaluating the pretrained encoder on STS", progress)
    pretrained = TextEncoder(max_length=32)
    start = track(pretrained)  # every fine-tune begins from these weights: step 0 of each history
    runs: dict[str, Any] = {"pretrained": {"sts": _sts(pretrained, sets), **start}}
    del pretrained
    for name in LOSSES:
        log(f"  fine-tuning with {name}: {steps} steps of {batch} sentences", progress)
        model, history = finetune(name, sentences, steps=steps, batch=batch, track_every=track_every, track=track,
                                  progress=progress, start=start)  # fmt: skip
        runs[name] = {"sts": _sts(model, sets), "history": history}
        del model
    report.text(
        __doc__.split("\n\n", 1)[1].strip(),
        f"Setting: {steps} steps, batch {batch} sentences (each twice), AdamW lr 3e-5, max 32 tokens, mean "
        f"pooling (MiniLM's own), seed 0. Alignment/uniformity are tracked every {track_every} steps on "
        f"{len(positive_a)} positive STS-B dev pairs and {len(track_sentences)} dev sentences. "
        "SimCSE trained BERT-base for 1 epoch of 1M sentences with batch 64 (15,625 steps); this is a reduced scale.",
    )
    names = list(runs["pretrained"]["sts"])
    report.table(["encoder", *names], [[k, *(r["sts"][n] for n in names)] for k, r in runs.items()])
    rows = [["pretrained", 0, runs["pretrained"]["alignment"], runs["pretrained"]["uniformity"]]]
    rows += [[k, r["history"][-1]["step"], r["history"][-1]["alignment"], r["history"][-1]["uniformity"]]
             for k, r in runs.items() if k != "pretrained"]  # fmt: skip
    report.table(["encoder", "steps", "alignment (dev pairs > 4)", "uniformity (dev)"], rows)
    try:
        report.figure(_plot(runs, report.folder / "language_align_uniform.png"),
                      "Alignment and uniformity over fine-tuning (SimCSE Figure 2 style); lower is better for both")  # fmt: skip
    except ImportError:
        pass
    return report.save({"experiment": "language", "budget": budget, "steps": steps, "batch": batch, "runs": runs})


def _plot(runs: dict[str, Any], path: Path) -> Path:
    from ..viz import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, r in runs.items():
        if name == "pretrained":
            continue
        h = r["history"]
        ax.plot([p["uniformity"] for p in h], [p["alignment"] for p in h], marker="o", ms=3, label=name)
        ax.annotate(f"{h[-1]['step']}", (h[-1]["uniformity"], h[-1]["alignment"]), fontsize=7)
    ax.scatter([runs["pretrained"]["uniformity"]], [runs["pretrained"]["alignment"]], marker="*", s=120, color="k",
               label="pretrained (start)", zorder=3)  # fmt: skip
    ax.set_xlabel("uniformity")
    ax.set_ylabel("alignment")
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path, plt)
