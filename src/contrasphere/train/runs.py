"""A run folder: load a trained checkpoint, evaluate it, write the report (JSON + PNG + a short Markdown page).

A run folder holds ``recipe.json``, ``checkpoint.pt`` and ``log.jsonl`` (from :func:`contrasphere.train.train`);
evaluation adds ``eval.json`` and ``report/`` with ``report.md``, ``curves.png`` (held-out alignment and
uniformity over training, and the loss), ``align_uniform.png`` (the path of training in the alignment-uniformity
plane) and, for 2-d outputs, ``circle.png`` (test features on the circle with the vMF density of their angles,
the paper's Figure 3).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from . import checkpoint
from .config import Recipe
from .loop import build, resolve_device
from .rundir import read_log, write_atomic
from .tasks import Task


def load_run(
    path: str | Path, device: str = "auto", data_root: str | None = None
) -> tuple[Recipe, Task, torch.nn.Module, dict[str, Any]]:
    """``(recipe, task, model, checkpoint)`` of a run folder or a ``checkpoint.pt`` file; ``data_root`` looks for
    the run's dataset there instead of where the recipe says."""
    path = Path(path)
    state = checkpoint.load(path / checkpoint.CHECKPOINT if path.is_dir() else path)
    recipe = Recipe.from_dict(state["recipe"])
    if device != "auto":
        recipe.train.device = device
    if data_root is not None:
        recipe.data.root = data_root
    task, model, loss_module = build(recipe, resolve_device(recipe.train.device))
    model.load_state_dict(state["model"])
    loss_module.load_state_dict(state["loss"])
    return recipe, task, model, state


def evaluate_run(
    folder: str | Path, task: Task, model: torch.nn.Module, recipe: Recipe, *, steps: int | None = None
) -> dict[str, Any]:
    """Run the task's protocols, write ``eval.json`` and the report; return the results."""
    folder = Path(folder)
    results, tensors = task.evaluate(model)
    results = {"recipe": recipe.name, "loss": recipe.loss.name, "steps": steps, **results}
    write_atomic(folder / "eval.json", json.dumps(results, indent=2))
    if recipe.eval.plots:
        results["figures"] = write_report(folder, recipe, results, tensors)
        write_atomic(folder / "eval.json", json.dumps(results, indent=2))
    return results


def write_report(folder: Path, recipe: Recipe, results: dict[str, Any], tensors: dict[str, Any]) -> list[str]:
    try:
        from .. import viz
    except ImportError:  # pragma: no cover
        return []
    report = folder / "report"
    report.mkdir(exist_ok=True)
    figures = []
    log = read_log(folder)
    wanted = ("alignment", "uniformity", "uniformity_image", "uniformity_text", "modality_gap", "loss")
    keys = [k for k in wanted if any(k in r for r in log)]
    if keys:
        try:
            figures.append(viz.plot_curves(log, report / "curves.png", keys=keys, title=f"{recipe.name}: held-out"))
            points = [r for r in log if "alignment" in r and "uniformity" in r]
            if points:
                runs = [{**r, "epoch": r["epoch"]} for r in points]
                figures.append(
                    viz.plot_align_uniform(runs, report / "align_uniform.png", color_key="epoch", title="training path")
                )
        except ImportError:
            return []
    z = tensors.get("test_z")
    if z is not None and z.shape[1] == 2:
        title = f"{recipe.name}: test features on S^1 (vMF KDE, kappa=25)"
        labels, names = tensors.get("test_labels"), results.get("classes")
        figures.append(viz.plot_circle(z, report / "circle.png", labels=labels, class_names=names, title=title))
    write_atomic(report / "report.md", _markdown(recipe, results, log, [Path(f).name for f in figures]))
    return [str(f) for f in figures]


def _markdown(recipe: Recipe, results: dict[str, Any], log: list[dict[str, Any]], figures: list[str]) -> str:
    lines = [f"# {recipe.name}", "", recipe.description, "", f"Loss: `{recipe.loss.name}` {recipe.loss.args}", ""]
    lines += ["| result | value |", "|---|---|"]
    for key, value in _flat(results):
        lines.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    if log:
        lines += ["", "| epoch | loss | alignment | uniformity |", "|---|---|---|---|"]
        for r in log:
            cells = [r.get(k) for k in ("loss", "alignment", "uniformity")]
            lines.append(f"| {r['epoch']} | " + " | ".join("" if c is None else f"{c:.4f}" for c in cells) + " |")
    lines += [""] + [f"![{f}]({f})" for f in figures]
    return "\n".join(lines) + "\n"


def _flat(d: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out = []
    for key, value in d.items():
        if key in ("classes", "figures", "recipe"):
            continue
        if isinstance(value, dict):
            out += _flat(value, f"{prefix}{key}.")
        else:
            out.append((f"{prefix}{key}", value))
    return out
