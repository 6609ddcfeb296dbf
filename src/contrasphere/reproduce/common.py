"""Shared pieces of the reproductions: report folders, tables, timing, progress."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .stats import mean_std, paired


class Report:
    """A report folder: Markdown lines, figures and the raw JSON written together."""

    def __init__(self, out: str | Path, title: str) -> None:
        self.folder = Path(out)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lines: list[str] = [f"# {title}", ""]
        self.began = time.perf_counter()

    def text(self, *paragraphs: str) -> None:
        for p in paragraphs:
            self.lines += [p, ""]

    def table(self, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        self.lines.append("| " + " | ".join(header) + " |")
        self.lines.append("|" + "---|" * len(header))
        for row in rows:
            self.lines.append("| " + " | ".join(fmt(v) for v in row) + " |")
        self.lines.append("")

    def figure(self, path: Path, caption: str) -> None:
        self.lines += [f"![{caption}]({Path(path).name})", "", f"*{caption}*", ""]

    def save(self, raw: dict[str, Any]) -> dict[str, Any]:
        raw = {**raw, "wall_seconds": time.perf_counter() - self.began}
        (self.folder / "runs.json").write_text(json.dumps(raw, indent=2, default=float) + "\n")
        self.lines.append(f"Wall time: {raw['wall_seconds'] / 60:.1f} min. Raw results of every run: `runs.json`.")
        (self.folder / "report.md").write_text("\n".join(self.lines) + "\n")
        return raw


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "n/a"
        return f"{value:.4g}"
    return str(value)


def log(message: str, progress: bool) -> None:
    if progress:
        print(message, flush=True)


def scaled(value: float, budget: float, minimum: int = 1) -> int:
    return max(minimum, round(value * budget))


def seed_comparison(
    report: Report, first: str, labels: dict[str, str], values: dict[str, dict[str, list[float]]], digits: int = 2
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, Any]]]:
    """Mean +- std over seeds of each quantity for the two arms of ``values`` (arm -> quantity -> one value per
    seed, the seeds in the same order), the paired difference second - first arm, and their table in ``report``.

    ``labels`` maps each quantity to its row label; ``first`` heads the label column. Returns the summary (arm ->
    quantity -> :func:`mean_std`) and the comparison (quantity -> :func:`paired`).
    """
    (a, va), (b, vb) = values.items()
    summary = {arm: {k: mean_std(v[k]) for k in labels} for arm, v in values.items()}
    comparison = {k: paired(vb[k], va[k]) for k in labels}

    def spread(arm: str, k: str) -> str:
        return f"{summary[arm][k]['mean']:.{digits}f} +- {summary[arm][k]['std']:.{digits}f}"

    report.table(
        [first, f"{a} (mean +- std)", f"{b} (mean +- std)", f"{b} - {a}", "95% interval", "exceeds seed noise"],
        [
            [
                label,
                spread(a, k),
                spread(b, k),
                comparison[k]["mean_difference"],
                f"[{comparison[k]['ci'][0]:.{digits}f}, {comparison[k]['ci'][1]:.{digits}f}]",
                "yes" if comparison[k]["exceeds_noise"] else "no",
            ]
            for k, label in labels.items()
        ],
    )
    return summary, comparison
