"""benchmarks/gpu_cifar.py, the prepared GPU-scale CIFAR-10 run: its --smoke run on the CPU (ResNet-18 on the
fixtures' images, both losses, the project's evaluation) writes a complete report (a GPU run is one shot)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

GPU_CIFAR = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_cifar.py"


@pytest.fixture(scope="module")
def gpu_cifar():
    spec = importlib.util.spec_from_file_location("contrasphere_benchmarks_gpu_cifar", GPU_CIFAR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _finite(x) -> bool:
    return isinstance(x, float | int) and not isinstance(x, bool) and math.isfinite(x)


def _fraction(x) -> bool:
    return _finite(x) and 0.0 <= x <= 1.0


@pytest.mark.slow  # about 10 s on 2 CPU cores: ResNet-18 trained and evaluated, both losses
def test_the_smoke_run_writes_a_complete_report(gpu_cifar, tmp_path, monkeypatch):
    monkeypatch.setenv("CONTRASPHERE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "gpu_cifar.json"
    threads = torch.get_num_threads()
    assert gpu_cifar.main(["--smoke", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads and sys.modules.get(gpu_cifar.TENSORBOARD, 0) is not None  # restored
    report = json.loads(out.read_text())
    assert report["mode"] == "smoke" and report["status"] == "done" and _finite(report["elapsed_s"])
    phases = ["environment", "data", "calibration"] + [
        f"{k}/{p}" for k in gpu_cifar.LOSSES for p in ("train", "evaluate")
    ]
    assert list(report["phases"]) == phases
    for name in phases:
        assert report["phases"][name]["status"] == "done", (name, report["phases"][name])
        assert _finite(report["phases"][name]["seconds"])
    assert report["environment"]["torch"] == torch.__version__ and len(report["environment"]["source_digest"]) == 16
    assert report["data"]["n_train"] == 80 and report["data"]["n_test"] == 60  # the fixtures, not the shared data

    calibration = report["calibration"]
    assert [r["steps"] for r in calibration["runs"]] == list(report["settings"]["calibration_steps"])
    assert calibration["per_step_s"] > 0 and calibration["steps"] >= report["settings"]["min_steps"]
    steps = report["settings"]["steps"]
    assert steps == calibration["steps"]

    assert set(report["results"]) == {"nt_xent", "align_uniform"}
    for key, row in report["results"].items():
        assert row["recipe"] == gpu_cifar.LOSSES[key] and row["loss"]["name"] == key
        assert row["steps"] == steps  # the same budget for both losses
        assert (row["n_train"], row["n_test"]) == (32, 24)  # the smoke run's subsets of the fixtures
        assert math.isclose(row["epochs"], steps * report["settings"]["batch_size"] / 32)
        for field in ("train_wall_s", "train_loop_s", "eval_wall_s", "final_loss", "alignment", "uniformity"):
            assert _finite(row[field]) and (field in ("final_loss", "uniformity") or row[field] >= 0), (key, field)
        for field in ("knn_accuracy", "linear_accuracy", "output_knn_accuracy", "output_linear_accuracy"):
            assert _fraction(row[field]), (key, field, row[field])
        assert 0 <= row["alignment"] <= 4 and row["uniformity"] <= 0  # on the unit sphere (alpha = t = 2)
        assert row["feature_dims"] == {"encoder": 512, "output": 128}  # ResNet-18, the recipes' head
        assert row["log"][0]["step"] == 0 and row["log"][-1]["step"] == steps
    assert report["results"]["nt_xent"]["loss"]["args"] == {"temperature": 0.5}
    assert report["results"]["align_uniform"]["loss"]["args"] == {"alpha": 2, "t": 2}
    assert report["anchors"]["simclr_resnet18_100_epochs"] == {
        "epochs": 100,
        "linear_accuracy": 0.856,
        "knn_accuracy": 0.832,
    }


def test_the_gpu_recipe_is_the_registered_recipes_on_resnet18(gpu_cifar):
    args = gpu_cifar.parse([])
    s = gpu_cifar.settings(args)
    assert (s["device"], s["precision"], s["batch_size"], s["budget_s"]) == ("cuda", "bf16", 512, 150.0)
    for key, name in gpu_cifar.LOSSES.items():
        base = gpu_cifar.get_recipe(name)
        recipe = gpu_cifar.gpu_recipe(key, s, 1500)
        assert recipe.model.encoder == "resnet18_cifar" and recipe.train.max_steps == 1500
        assert (recipe.train.device, recipe.train.precision, recipe.data.batch_size) == ("cuda", "bf16", 512)
        assert recipe.loss == base.loss and recipe.augment == base.augment and recipe.optim == base.optim
        assert (recipe.eval.knn_k, recipe.eval.linear_probe) == (200, True)


def test_the_anchor_interpolation(gpu_cifar):
    assert gpu_cifar.anchor_linear(10) == pytest.approx(0.57)
    assert 0.57 < gpu_cifar.anchor_linear(20) < 0.66
    assert gpu_cifar.anchor_linear(0.5) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="the failure it checks needs a machine without a GPU")
def test_without_a_gpu_the_gpu_run_stops_at_once_and_says_why(gpu_cifar, tmp_path):
    out = tmp_path / "gpu_cifar.json"
    assert gpu_cifar.main(["--out", str(out)]) == 1
    report = json.loads(out.read_text())
    assert report["status"] == "failed: environment" and list(report["phases"]) == ["environment"]
    assert "no CUDA GPU" in report["phases"]["environment"]["error"]


def test_the_steps_fill_the_budget_or_what_the_deadline_leaves(gpu_cifar):
    s = gpu_cifar.settings(gpu_cifar.parse([]))  # 150 s per loss, 345 s in all, 30 s per evaluation
    plan = gpu_cifar.plan_steps(s, per_step=0.05, fixed=2.0, per_epoch=0.5, steps_per_epoch=97, elapsed=20.0)
    assert plan["budget_cut_by_deadline"] and plan["budget_s"] == pytest.approx((345 - 20) / 2 - 30)
    assert plan["predicted_train_s"] <= plan["budget_s"] + 0.5 and plan["steps"] == 2366
    roomy = gpu_cifar.plan_steps({**s, "deadline_s": 1000.0}, 0.05, 2.0, 0.5, 97, 20.0)
    assert not roomy["budget_cut_by_deadline"] and roomy["budget_s"] == 150
    assert roomy["predicted_train_s"] == pytest.approx(150, abs=1)
    late = gpu_cifar.plan_steps(s, 0.05, 2.0, 0.5, 97, elapsed=400.0)  # past the deadline: the minimum
    assert late["steps"] == s["min_steps"]
