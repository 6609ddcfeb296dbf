"""The reproductions' statistics, each against an independent computation (numpy, the t formula, brute force)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from contrasphere.reproduce.stats import mean_std, paired, rank_correlations


def test_mean_std_is_the_sample_standard_deviation():
    r = mean_std([47.0, 45.0, 46.5])
    assert r["mean"] == pytest.approx(46.1666666667)
    assert r["std"] == pytest.approx(math.sqrt(((47 - 46.1666666667) ** 2 + (45 - 46.1666666667) ** 2
                                                 + (46.5 - 46.1666666667) ** 2) / 2))  # fmt: skip
    assert r["n"] == 3
    assert math.isnan(mean_std([1.0])["std"])
    with pytest.raises(ValueError, match="at least one"):
        mean_std([])


def test_paired_difference_interval_and_p_value_from_the_formula():
    a, b = [46.0, 47.5, 45.9, 46.8], [45.1, 46.0, 45.5, 45.0]
    d = np.subtract(a, b)
    r = paired(a, b)
    half = 3.182446305284263 * d.std(ddof=1) / 2  # t quantile for 3 degrees of freedom at 97.5%, sqrt(4) = 2
    assert r["mean_difference"] == pytest.approx(d.mean())
    assert r["ci"] == pytest.approx([d.mean() - half, d.mean() + half])
    t = d.mean() / (d.std(ddof=1) / 2)
    assert r["p_value"] == pytest.approx(2 * scipy.stats.t.sf(abs(t), 3))
    assert r["exceeds_noise"] is (r["ci"][0] > 0)


def test_paired_noise_is_not_called_a_difference():
    r = paired([1.0, 2.0, 3.0], [1.5, 1.2, 3.1])  # differences -0.5, 0.8, -0.1: the interval holds 0
    assert r["ci"][0] < 0 < r["ci"][1] and not r["exceeds_noise"] and r["p_value"] > 0.05
    same = paired([1.0, 2.0], [1.0, 2.0])
    assert same["mean_difference"] == 0 and same["p_value"] == 1.0 and not same["exceeds_noise"]


def test_paired_refuses_what_cannot_be_paired():
    with pytest.raises(ValueError, match="same length"):
        paired([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="at least 2 seeds"):
        paired([1.0], [2.0])


def _kendall_tau_b(x, y):
    """Kendall's tau-b by counting every pair (the equation)."""
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = np.sign(x[i] - x[j]), np.sign(y[i] - y[j])
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx == dy:
            concordant += 1
        else:
            discordant += 1
    return (concordant - discordant) / math.sqrt(
        (concordant + discordant + ties_x) * (concordant + discordant + ties_y)
    )


def test_rank_correlations_match_the_definitions():
    rng = np.random.default_rng(3)
    x = rng.normal(size=30)
    y = x + rng.normal(size=30)
    y[4] = y[7]  # a tie
    r = rank_correlations(x, y, resamples=500)
    rx, ry = scipy.stats.rankdata(x), scipy.stats.rankdata(y)
    assert r["spearman"]["value"] == pytest.approx(np.corrcoef(rx, ry)[0, 1])
    assert r["kendall"]["value"] == pytest.approx(_kendall_tau_b(x, y))
    for c in r.values():
        assert c["ci"][0] <= c["value"] <= c["ci"][1] and c["resamples"] == 500 and c["p_value"] < 0.05


def test_bootstrap_interval_is_seeded_and_narrows_with_more_points():
    rng = np.random.default_rng(0)
    widths = []
    for n in (15, 200):
        x = rng.normal(size=n)
        y = 0.5 * x + rng.normal(size=n)
        one, again = rank_correlations(x, y, resamples=400), rank_correlations(x, y, resamples=400)
        assert one == again
        widths.append(one["spearman"]["ci"][1] - one["spearman"]["ci"][0])
    assert widths[1] < widths[0] / 2


def test_rank_correlations_refuse_too_few_points():
    with pytest.raises(ValueError, match="at least 3"):
        rank_correlations([1.0, 2.0], [2.0, 1.0])
    with pytest.raises(ValueError, match="same length"):
        rank_correlations([1.0, 2.0, 3.0], [2.0, 1.0])
