"""The report of `contrasphere analyze`: pair cosines, their histogram, and the Markdown page."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor


def pair_cosines(z: Tensor, pairs: Tensor | None, n_random: int = 20_000, seed: int = 0) -> dict[str, Tensor]:
    """Cosines of the positive pairs (if any) and of seeded random distinct pairs, for the histogram."""
    u = F.normalize(z.double(), dim=1)
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(0, u.shape[0], (n_random,), generator=g)
    j = (i + torch.randint(1, u.shape[0], (n_random,), generator=g)) % u.shape[0]  # never i itself
    out = {"random pairs": (u[i] * u[j]).sum(1)}
    if pairs is not None and pairs.shape[0]:
        out["positive pairs"] = (u[pairs[:, 0]] * u[pairs[:, 1]]).sum(1)
    return out


def plot_cosine_histogram(cosines: dict[str, Tensor], path: Path, title: str) -> Path:
    from ..viz import _pyplot, _save

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, values in cosines.items():
        ax.hist(values.numpy(), bins=60, range=(-1, 1), density=True, alpha=0.6, label=f"{name} ({values.numel()})")
    ax.set_xlabel("cosine similarity")
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, frameon=False)
    return _save(fig, path, plt)


def _num(x: Any, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def _text_side(text: dict[str, Any], captions: int) -> list[str]:
    """The table of the captions' own geometry in an image-text report."""
    lines = ["", f"## Text side ({captions} captions)", "", "| metric | value | meaning |", "|---|---|---|"]
    rows = [
        (f"uniformity (t={text['t']:g})", text["uniformity"], "lower is more uniform"),
        ("Wasserstein uniformity", text["wasserstein_uniformity"], "-W2 to N(0, I/D); 0 at best"),
        ("anisotropy", text["anisotropy"], "mean cosine of distinct captions"),
        ("effective rank", text["effective_rank"], f"RankMe, of at most {min(text['n'], text['dim'])}"),
        ("alpha-ReQ", text["alpha_req"], "covariance eigen-decay"),
        ("LiDAR", text.get("lidar"), f"{text.get('lidar_views', 0)} captions of each image as its views"),
    ]
    lines += [f"| {name} | {_num(value)} | {meaning} |" for name, value, meaning in rows]
    return lines


def format_report(analysis: dict[str, Any]) -> str:
    """``report.md``: the settings, a table of every metric and, with labels, a table per class."""
    s, r = analysis["settings"], analysis["metrics"]
    split = f" ({s['split']} split)" if s["split"] else ""
    lines = [
        f"# {s['dataset']}{split} embedded by {s['encoder']}",
        "",
        f"{s['items']} items ({s['kind']}) on {s['device']} in {analysis['embed_seconds']:.1f} s "
        f"({analysis['seconds']:.1f} s in all); {r['n']} embeddings of dimension {r['dim']}, projected onto the "
        "unit sphere for every metric.",
        "",
        "| metric | value | meaning |",
        "|---|---|---|",
    ]

    def row(name: str, value: Any, meaning: str, digits: int = 4) -> None:
        lines.append(f"| {name} | {_num(value, digits)} | {meaning} |")

    norms = r["norms"]
    row("norm (mean)", norms["mean"], f"std {norms['std']:.3g}, min {norms['min']:.4g}, max {norms['max']:.4g}")
    if s["kind"] == "sts":
        row("STS Spearman", r["sts_spearman"], "of pair cosines with the gold scores (x100 in SimCSE's tables)")
        row(
            f"alignment (alpha={r['alpha']:g})",
            r.get("alignment"),
            f"over {r['n_pairs']} pairs scored above {r['positive_threshold']:g}; lower is better",
        )
    elif s["kind"] == "captions":
        what = f"caption 1 vs caption 2 of each of {r['images']} images; lower is better"
        row(f"alignment (alpha={r['alpha']:g})", r["alignment"], what)
    elif s["kind"] == "image-text":
        what = f"each of {r['images']} images vs its first caption; lower is better"
        row(f"alignment (alpha={r['alpha']:g})", r["alignment"], what)
        spread = r["modality_spread"]
        row("modality gap", r["modality_gap"], "distance between the mean image and the mean caption; 0 to 2")
        row("matching cosine", spread["matching"], "image and its first caption")
        row("non-matching cosine", spread["non_matching"], "image and another image's caption")
        row("image-image cosine", spread["intra_a"], "mean over distinct images (the image side's anisotropy)")
        row("caption-caption cosine", spread["intra_b"], "mean over distinct first captions")
        lines += ["", "The rest of this table is the image side; the text side follows."]
        lines += ["", "| metric | value | meaning |", "|---|---|---|"]
    else:
        row(f"alignment (alpha={r['alpha']:g})", None, "no positive pairs in this data")
    subset = "" if r["uniformity_points"] == r["n"] else f" (random {r['uniformity_points']} of {r['n']})"
    optimum = r["uniformity_optimum"]
    best = "" if optimum is None else f"; uniform on S^{r['dim'] - 1}: {optimum:.4f}"
    row(f"uniformity (t={r['t']:g})", r["uniformity"], f"lower is more uniform{subset}{best}")
    row("Wasserstein uniformity", r["wasserstein_uniformity"], "-W2 to N(0, I/D); higher is more uniform, 0 at best")
    row("anisotropy", r["anisotropy"], "mean cosine of distinct pairs; 0 = isotropic, 1 = one point")
    row("effective rank", r["effective_rank"], f"RankMe, of at most {min(r['n'], r['dim'])}", 2)
    ranks = r["alpha_req_ranks"]
    row("alpha-ReQ", r["alpha_req"], f"covariance eigen-decay over ranks {ranks[0]}-{ranks[1]}" if ranks else "")
    if "lidar" in r:
        what = "captions of" if s["kind"] == "captions" else "(the two sides of each pair) of"
        row("LiDAR", r["lidar"], f"{r['lidar_views']} views {what} {r['lidar_samples']} samples", 2)
    else:
        row("LiDAR", None, "needs several views of each sample")
    if "text" in r:
        lines.extend(_text_side(r["text"], r["captions"]))
        lines += ["", "## Retrieval", "", "| direction | R@1 | R@5 | R@10 |", "|---|---|---|---|"]
        for direction, recall in r["retrieval"].items():
            cells = " | ".join(_num(recall.get(f"R@{k}"), 3) for k in (1, 5, 10))
            lines.append(f"| {direction.replace('_', ' ')} | {cells} |")
    if "knn" in r:
        k = r["knn"]
        row("kNN accuracy", k["accuracy"], f"k={k['k']}, tau=0.07, {k['train']} / {k['test']} seeded half split")
    if "per_class" in r:
        lines += ["", "## Per class", "", "| class | n | alignment to class mean | within-class anisotropy |"]
        lines.append("|---|---|---|---|")
        for name, c in r["per_class"].items():
            lines.append(f"| {name} | {c['n']} | {_num(c['alignment_to_mean'])} | {_num(c['anisotropy'])} |")
    if analysis["figures"]:
        lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in analysis["figures"]]
    return "\n".join(lines) + "\n"
