"""Reproductions of Wang & Isola's findings on real data: ``contrasphere reproduce {vision,language,image-text}``.

Each experiment writes a report folder: ``report.md`` (tables and figures), PNG figures, and ``runs.json`` with the
raw results of every run, so that every number in the page can be traced to it. ``budget`` scales the training
length and the sweep size: 1.0 is the default, sized to finish in under an hour on a 2-core CPU; larger values
approach the paper's scale on a GPU; the tests run a tiny budget.
"""

from __future__ import annotations

EXPERIMENTS = ("vision", "language", "image-text")


def run(experiment: str, out: str, budget: float = 1.0, progress: bool = True) -> dict:
    if experiment == "vision":
        from .vision import run as go
    elif experiment == "language":
        from .language import run as go
    elif experiment == "image-text":
        from .image_text import run as go
    else:
        raise ValueError(f"unknown experiment {experiment!r}; choose from {', '.join(EXPERIMENTS)}")
    if not budget > 0:
        raise ValueError(f"budget must be positive (1.0 is the default), got {budget}")
    return go(out, budget=budget, progress=progress)
