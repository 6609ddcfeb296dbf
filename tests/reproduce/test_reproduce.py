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
    # the rank correlations, recomputed with scipy from the runs (the predictors' signs flipped: lower is better)
    acc = [r["linear_accuracy"] for r in runs]
    for key, values in (("alignment", [r["alignment"] for r in runs]),
                        ("uniformity", [r["uniformity"] for r in runs]),
                        ("alignment + uniformity", [r["alignment"] + r["uniformity"] for r in runs])):  # fmt: skip
        for name, test in (("spearman", scipy.stats.spearmanr), ("kendall", scipy.stats.kendalltau)):
            want = test([-v for v in values], acc).statistic
            got = raw["correlations"]["linear_accuracy"][key][name]
            assert got["value"] == pytest.approx(want, abs=1e-9) or (math.isnan(want) and math.isnan(got["value"]))
            assert -1 <= got["ci"][0] <= got["ci"][1] <= 1
    # the seed runs: each family's best sweep settings, the same seeds, the summary and paired difference from them
    seed_runs = raw["seed_runs"]
    assert set(seed_runs) == {"NT-Xent", "align-uniform"}
    for family, rows in seed_runs.items():
        assert all(r["from"] == raw["best"][family] for r in rows)  # the best sweep encoder's loss settings
        assert all(r["args"] == next(x["args"] for x in runs if x["label"] == r["from"]) for r in rows)
        assert [r["seed"] for r in rows] == [r["seed"] for r in seed_runs["NT-Xent"]] and len(rows) >= 2
        linear = [100 * r["linear_accuracy"] for r in rows]
        assert raw["seeds"]["summary"][family]["linear_accuracy"]["mean"] == pytest.approx(sum(linear) / len(linear))
    diff = [100 * (b["linear_accuracy"] - a["linear_accuracy"]) for a, b in zip(*seed_runs.values())]
    got = raw["seeds"]["comparison"]["quantities"]["linear_accuracy"]
    assert got["mean_difference"] == pytest.approx(sum(diff) / len(diff))
    labels = ["untrained", "supervised (cross-entropy)", "NT-Xent", "align-uniform"]
    assert [c["label"] for c in raw["circle"]] == labels
    for c in raw["circle"]:  # Figure 3's captions: the accuracy and uniformity of the 2-d output features
        assert 0 <= c["output_linear_accuracy"] <= 1 and -4 <= c["output_uniformity"] <= 0
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
    # every number at the encoder's own maximum length, training at its own; the published row beside them
    assert raw["eval_max_length"] == 256 and raw["train_max_length"] == 32
    assert _close(rows["published (MTEB, 256 tokens)"][header.index("sts12") + 1], 72.369)
    # the seeds: the same seeds for both losses, seed 0 the reported run, the summary and paired difference from them
    seeds = raw["seed_runs"]
    assert [r["seed"] for r in seeds["info_nce"]] == [r["seed"] for r in seeds["align_uniform"]] == raw["seeds"]
    assert len(raw["seeds"]) >= 2 and seeds["info_nce"][0]["sts"] == runs["info_nce"]["sts"]
    for key in header:
        values = {name: [r["sts"][key] for r in rows_] for name, rows_ in seeds.items()}
        assert raw["summary"]["align_uniform"][key]["mean"] == pytest.approx(
            sum(values["align_uniform"]) / len(raw["seeds"])
        )
        diff = [b - a for a, b in zip(values["info_nce"], values["align_uniform"])]
        assert raw["comparison"]["sets"][key]["mean_difference"] == pytest.approx(sum(diff) / len(diff))


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


def test_vision_design_varies_every_factor_the_paper_varied():
    from contrasphere.reproduce.vision import SWEEP_SIZE, design

    points = design(SWEEP_SIZE)
    assert points == design(SWEEP_SIZE)  # seeded
    assert len({p["label"] for p in points}) == len(points) == SWEEP_SIZE + 2
    families = [p["family"] for p in points]
    assert families.count("contrastive") == SWEEP_SIZE // 2  # half NT-Xent; the rest and the two corners: align-uniform
    for key in ("data.batch_size", "model.out_dim", "train.max_steps", "optim.lr"):
        assert len({p["changes"][key] for p in points}) >= 3, key
    au = [p["args"] for p in points if p["loss"] == "align_uniform"]
    assert {a["alpha"] for a in au} == {1, 2} and len({a["t"] for a in au}) >= 3
    ratios = {a["align_weight"] / a["uniform_weight"] for a in au if a["uniform_weight"]}
    assert min(ratios) < 0.2 and max(ratios) > 5
    assert {(a["align_weight"], a["uniform_weight"]) for a in au} >= {(1, 0), (0, 1)}  # each quantity alone
    taus = [p["args"]["temperature"] for p in points if p["loss"] == "nt_xent"]
    assert min(taus) < 0.15 and max(taus) > 0.4


def test_vision_correlations_are_given_again_without_the_collapsed_encoders(tmp_path):
    """Collapsed encoders (all outputs at one point) have a perfect alignment of 0 and the lowest accuracy, which
    alone can turn alignment's correlation negative; the report repeats the table without them."""
    from contrasphere.reproduce.common import Report
    from contrasphere.reproduce.vision import _correlations

    live = [  # better alignment and uniformity, better accuracy
        {"alignment": 0.5 + 0.1 * i, "uniformity": -3.0 + 0.2 * i, "linear_accuracy": 0.5 - 0.03 * i,
         "knn_accuracy": 0.48 - 0.02 * i} for i in range(6)
    ]  # fmt: skip
    dead = [{"alignment": 1e-6 * i, "uniformity": -1e-5 * i, "linear_accuracy": 0.2, "knn_accuracy": 0.2 + 0.01 * i}
            for i in range(3)]  # fmt: skip
    report = Report(tmp_path, "test")
    out = _correlations(report, live + dead)
    everything = out["linear_accuracy"]["alignment"]["spearman"]["value"]
    want = scipy.stats.spearmanr([-r["alignment"] for r in live + dead], [r["linear_accuracy"] for r in live + dead])
    assert everything == pytest.approx(want.statistic)
    without = out["without collapsed"]
    assert without["encoders"] == 6
    for metric in ("linear_accuracy", "knn_accuracy"):
        for predictor in ("alignment", "uniformity", "alignment + uniformity"):
            assert without[metric][predictor]["spearman"]["value"] == pytest.approx(1.0)
            assert without[metric][predictor]["kendall"]["value"] == pytest.approx(1.0)
    assert out["linear_accuracy"]["alignment"]["spearman"]["value"] < 0.5  # the collapsed ones drag it down
    assert "without the 3 collapsed encoders" in "\n".join(report.lines)
    assert "without collapsed" not in _correlations(Report(tmp_path, "test"), live)  # none collapsed: no repeat
