"""Reproductions of Wang & Isola's findings on real data: ``contrasphere reproduce {vision,language,image-text}``.

Each experiment writes a report folder: ``report.md`` (tables and figures), PNG figures, and ``runs.json`` with the
raw results of every run, so that every number in the page can be traced to it. ``budget`` scales the training
length and the sweep size: 1.0 is the default, sized to finish in under an hour on a 2-core CPU; larger values
approach the paper's scale on a GPU; the tests run a tiny budget.
"""

from __future__ import annotations

from ..errors import ConfigError

EXPERIMENTS = ("vision", "language", "image-text")
MAX_BUDGET = 100.0  # 200 epochs per vision encoder: the paper's length


def run(experiment: str, out: str, budget: float = 1.0, progress: bool = True) -> dict:
    if experiment == "vision":
        from .vision import run as go
    elif experiment == "language":
        from .language import run as go
    elif experiment == "image-text":
        from .image_text import run as go
    else:
        raise ConfigError(f"unknown experiment {experiment!r}; choose from {', '.join(EXPERIMENTS)}")
    if not 0 < budget <= MAX_BUDGET:
        raise ConfigError(
            f"budget must be positive and at most {MAX_BUDGET:g} (1.0 is the default, sized for an hour on 2 CPU "
            f"cores; 10 is a GPU-scale run), got {budget}"
        )
    return go(out, budget=budget, progress=progress)
