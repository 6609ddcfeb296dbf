"""The reproductions end to end at a tiny budget: the report folder, and every number in it traceable to runs.json.

Each runs twice (the ``data_source`` fixture of tests/conftest.py): on the tiny synthetic datasets of tests/fixtures,
which every checkout has, and on ../shared/data where it exists (skipped elsewhere).
"""

from __future__ import annotations

import json
import math
import re

import pytest
import scipy.stats
from conftest import DATA_SOURCES

from contrasphere.cli import main
from contrasphere.reproduce import run as reproduce
from contrasphere.train import data as D

NEEDS = {  # what each experiment reads
    "vision": ["cifar10"],
    "language": ["wiki1m_head", "sts"],
    "image-text": ["flickr8k"],
}


def _table(report: str, first_header: str) -> list[list[str]]:
    """The rows of the first Markdown table whose header starts with ``first_header``."""
    lines = report.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return rows


def _close(cell: str, value: float) -> bool:
    return float(cell) == pytest.approx(value, rel=1e-3, abs=1e-3)


def _run(tmp_path, experiment: str, capsys, source: str) -> tuple[dict, str]:
    root = DATA_SOURCES[source].resolve()
    for name in NEEDS[experiment]:  # the run reads this source, and only it
        assert D.find_data(name, None, "").resolve().is_relative_to(root), name
    out = tmp_path / experiment
    assert main(["reproduce", experiment, "--budget", "0.05", "--out", str(out), "--no-progress"]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    raw = json.loads((out / "runs.json").read_text())
    report = (out / "report.md").read_text()
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report):
        assert (out / image).stat().st_size > 1000, image  # every figure the page shows was written
    assert raw["experiment"] == experiment and raw["budget"] == 0.05 and raw["wall_seconds"] > 0
    return raw, report


@pytest.mark.slow
def test_vision_report(data_source, tmp_path, capsys):
    raw, report = _run(tmp_path, "vision", capsys, data_source)
    runs = raw["runs"]
    assert len(runs) >= 3 and {r["family"] for r in runs} >= {"contrastive"}
    rows = {row[0]: row for row in _table(report, "encoder")}
    for r in runs:
        row = rows[r["label"]]
        assert _close(row[1], r["alignment"]) and _close(row[2], r["uniformity"])
        assert _close(row[3], 100 * r["linear_accuracy"]) and _close(row[4], 100 * r["knn_accuracy"])
        assert 0 <= r["alignment"] <= 4 and -4 <= r["uniformity"] <= 0  # alpha = 2 and t = 2 bounds on the sphere
    # the rank correlations, recomputed with scipy from the runs
    acc = [r["linear_accuracy"] for r in runs]
    for key, values in (("alignment", [r["alignment"] for r in runs]),
                        ("uniformity", [r["uniformity"] for r in runs])):  # fmt: skip
        rho = -scipy.stats.spearmanr(values, acc).statistic
        got = raw["correlations"]["linear_accuracy"][key]
        assert got == pytest.approx(rho, abs=1e-9) or (math.isnan(rho) and math.isnan(got))
    labels = ["untrained", "supervised (cross-entropy)", "NT-Xent", "align-uniform"]
    assert [c["label"] for c in raw["circle"]] == labels
    for c in raw["circle"]:  # Figure 3's captions: the accuracy and uniformity of the 2-d output features
        assert 0 <= c["output_linear_accuracy"] <= 1 and -4 <= c["uniformity_2d"] <= 0
    assert (tmp_path / "vision" / "vision_circle.png").exists()


@pytest.mark.slow
def test_language_report(data_source, tmp_path, capsys):
    raw, report = _run(tmp_path, "language", capsys, data_source)
    runs = raw["runs"]
    assert set(runs) == {"pretrained", "info_nce", "align_uniform"}
    rows = {row[0]: row for row in _table(report, "encoder")}
    header = ["stsb-dev", "stsb-test", "sts12", "sts13", "sts14", "sts15", "sts16", "avg STS12-16 + STS-B test"]
    for name, r in runs.items():
        assert list(r["sts"]) == header
        for cell, key in zip(rows[name][1:], header):
            assert _close(cell, r["sts"][key])
        average = sum(r["sts"][k] for k in header[1:-1]) / 6
        assert r["sts"][header[-1]] == pytest.approx(average)
    for name in ("info_nce", "align_uniform"):
        history = runs[name]["history"]
        assert [h["step"] for h in history] == list(range(0, raw["steps"] + 1, max(1, raw["steps"] // 10)))
        # the encoder actually moved: tracked quantities differ from the pretrained start
        assert history[-1]["uniformity"] != history[0]["uniformity"]
        assert history[0]["alignment"] == pytest.approx(runs["pretrained"]["alignment"], rel=1e-5)


@pytest.mark.slow
def test_image_text_report(data_source, tmp_path, capsys):
    raw, report = _run(tmp_path, "image-text", capsys, data_source)
    rows = _table(report, "heads")
    assert [row[0] for row in rows][1:] == ["clip", "siglip", "align_uniform"]
    for row in rows:
        name = "before" if row[0].startswith("random") else row[0]
        r = raw["runs"][name]
        assert 0 <= r["modality_gap"] <= 2
        assert _close(row[7], r["modality_gap"])
        for cell, k in zip(row[1:4], (1, 5, 10)):
            assert _close(cell, 100 * r["text_to_image"][f"R@{k}"])


def test_bad_budget_and_experiment():
    with pytest.raises(ValueError, match="budget must be positive"):
        reproduce("vision", "unused", budget=0)
    with pytest.raises(ValueError, match="unknown experiment"):
        reproduce("audio", "unused")
