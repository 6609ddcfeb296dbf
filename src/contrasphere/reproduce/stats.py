"""The statistics the reproductions report: seed spread, paired comparisons and rank correlations with intervals.

Everything here is a thin, documented use of :mod:`scipy.stats` (in the ``train`` and ``stats`` extras), so that
each number in a report says what it is: a mean with the sample standard deviation over seeds (``ddof=1``), a
paired t-test over seeds that share everything but the loss (same initialisation, same data order), and Spearman
and Kendall rank correlations with percentile bootstrap intervals over encoders.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np


def _scipy_stats() -> Any:
    try:
        from scipy import stats
    except ImportError as err:
        raise ImportError("the reproductions' statistics need scipy: pip install 'contrasphere[train]'") from err
    return stats


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (``ddof=1``; NaN for a single value) of ``values``."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("mean_std needs at least one value")
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if x.size > 1 else math.nan, "n": int(x.size)}


def paired(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> dict[str, Any]:
    """Paired comparison of ``a`` and ``b`` (same seeds, in the same order): the mean of ``a - b``, its standard
    deviation, the two-sided paired t-test and the t confidence interval of the mean difference at ``level``.

    ``exceeds_noise`` is True when that interval excludes 0 (equivalently p < 1 - level): the difference is larger
    than the seed-to-seed variation of the difference. With 3 seeds the interval is wide (t = 4.30 at 95%).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired needs two 1-d sequences of the same length, got {x.shape} and {y.shape}")
    if x.size < 2:
        raise ValueError("a paired comparison needs at least 2 seeds")
    d = x - y
    mean, sd, n = float(d.mean()), float(d.std(ddof=1)), int(d.size)
    stats = _scipy_stats()
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    if sd == 0:
        p = 1.0 if mean == 0 else 0.0
    else:
        p = float(stats.ttest_rel(x, y).pvalue)
    low, high = mean - half, mean + half
    return {
        "mean_difference": mean,
        "std_difference": sd,
        "n": n,
        "p_value": p,
        "level": level,
        "ci": [low, high],
        "exceeds_noise": bool(low > 0 or high < 0),
    }


def rank_correlations(
    x: Sequence[float], y: Sequence[float], resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Spearman's rho and Kendall's tau-b of ``x`` and ``y``, each with a percentile bootstrap interval at
    ``level`` (the pairs resampled with replacement, ``resamples`` times, seeded) and its two-sided p-value."""
    u, v = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if u.shape != v.shape or u.ndim != 1:
        raise ValueError(f"rank_correlations needs two 1-d sequences of the same length, got {u.shape} and {v.shape}")
    if u.size < 3:
        raise ValueError("rank correlations need at least 3 points")
    stats = _scipy_stats()
    tests = {"spearman": stats.spearmanr, "kendall": stats.kendalltau}
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, u.size, size=(resamples, u.size))
    out: dict[str, dict[str, Any]] = {}
    for name, test in tests.items():
        result = test(u, v)
        with warnings.catch_warnings():  # a resample with a constant side: NaN, dropped below
            warnings.simplefilter("ignore", stats.ConstantInputWarning)
            boot = np.array([test(u[i], v[i]).statistic for i in picks], dtype=float)
        boot = boot[np.isfinite(boot)]  # a resample with a constant side has no rank correlation
        alpha = (1 - level) / 2
        low, high = (float(q) for q in np.quantile(boot, [alpha, 1 - alpha])) if boot.size else (math.nan,) * 2
        out[name] = {
            "value": float(result.statistic),
            "p_value": float(result.pvalue),
            "ci": [low, high],
            "level": level,
            "resamples": int(boot.size),
        }
    return out
