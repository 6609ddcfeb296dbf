"""benchmarks/gpu.py, the prepared GPU check: its --smoke run on the CPU writes a complete report, and its
comparisons flag a wrong loss (a GPU run is one shot: the script must work the first time)."""

from __future__ import annotations

import importlib.util
import json
import math
import time
from pathlib import Path

import pytest
import torch
from torch import nn

GPU_PY = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("contrasphere_benchmarks_gpu", GPU_PY)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _finite(x) -> bool:
    return isinstance(x, float | int) and math.isfinite(x)


def test_the_smoke_run_writes_every_phase(gpu, tmp_path):
    out = tmp_path / "gpu.json"
    assert gpu.main(["--smoke", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "smoke" and _finite(report["elapsed_s"])
    for name in ("environment", "matmul", "correctness", "speed"):
        assert report["phases"][name]["status"] == "done", (name, report["phases"][name])
        assert _finite(report["phases"][name]["seconds"])
    env = report["environment"]
    assert env["torch"] == torch.__version__ and len(env["source_digest"]) == 16
    assert set(env["peers"]) == {"open_clip", "inf_cl", "siglip_kernel"}
    assert all(isinstance(p["ok"], bool) for p in env["peers"].values())
    assert report["matmul"]["reference_flops_per_s"] > 0

    cases = report["correctness"]["cases"]
    losses = {c["loss"] for c in cases}
    assert losses == {"nt_xent", "clip", "siglip", "mochi"}
    assert len(cases) == len(losses) * 2 * 2  # float32 and bfloat16, tiled and dense
    for c in cases:
        assert "error" not in c, c
        assert _finite(c["value_rel_err"]) and _finite(c["grad_rel_err"]) and isinstance(c["pass"], bool), c
        assert c["grad_rel_errs"] and c["tolerance"] == gpu.TOLERANCES[c["dtype"]]
        assert math.isclose(c["value"], c["ref_value"], rel_tol=0.05)  # the same loss, not a placeholder
        if c["dtype"] == "float32":
            assert c["pass"], c
    assert report["correctness"]["summary"]["cases"] == len(cases)

    speed = report["speed"]["cases"]
    assert {c["impl"] for c in speed} >= {"contrasphere", "dense", "inf_cl", "open_clip", "siglip_kernel"}
    for objective in gpu.OBJECTIVES:
        for impl in ("contrasphere", "dense"):
            (c,) = [c for c in speed if (c["objective"], c["impl"]) == (objective, impl)]
            assert c["status"] == "ok" and c["ms"] > 0 and c["reps"] == 1 and _finite(c["value"]), c
            assert c["flops"] == gpu.flop_count(objective, 64, 16) and c["matmul_fraction"] > 0
    for c in speed:
        assert c["status"] in ("ok", "skipped"), c  # a peer that cannot run here says why
        assert c["status"] == "ok" or c["reason"]


def test_the_comparison_passes_the_same_loss_and_flags_a_wrong_one(gpu):
    tol = gpu.TOLERANCES["float32"]
    ref_value, ref_grads = torch.tensor(2.5, dtype=torch.float64), {"z_a": torch.linspace(-1, 1, 7).double()}
    same = gpu.compare(ref_value.float(), {"z_a": ref_grads["z_a"].float()}, ref_value, ref_grads, tol)
    assert same["pass"] and same["value_rel_err"] < 1e-7 and same["grad_rel_err"] < 1e-7

    off_value = gpu.compare(ref_value * 1.01, ref_grads, ref_value, ref_grads, tol)
    assert not off_value["pass"] and off_value["value_rel_err"] == pytest.approx(0.01)
    off_grad = gpu.compare(ref_value, {"z_a": ref_grads["z_a"] * 1.01}, ref_value, ref_grads, tol)
    assert not off_grad["pass"] and off_grad["grad_rel_err"] == pytest.approx(0.01)
    nan = gpu.compare(torch.tensor(float("nan")), ref_grads, ref_value, ref_grads, tol)
    assert not nan["pass"] and nan["value_rel_err"] == math.inf
    missing = gpu.compare(ref_value, {"z_a": None}, ref_value, ref_grads, tol)
    assert not missing["pass"] and missing["grad_rel_err"] == math.inf
    extra = gpu.compare(ref_value, {**ref_grads, "z_b": torch.ones(3)}, ref_value, ref_grads, tol)
    assert not extra["pass"]
    assert gpu._clean({"e": math.inf, "n": [math.nan, 1.0]}) == {"e": None, "n": [None, 1.0]}  # valid JSON


class _Wrong(nn.Module):
    """The loss times 1.01, or the right value with z_b's gradient cut."""

    def __init__(self, inner: nn.Module, how: str) -> None:
        super().__init__()
        self.inner, self.how = inner, how

    def forward(self, **inputs):
        if self.how == "value":
            return 1.01 * self.inner(**inputs)
        return self.inner(**{**inputs, "z_b": inputs["z_b"].detach()})


@pytest.mark.parametrize("how", ["value", "gradient"])
def test_a_wrong_loss_on_the_device_side_is_flagged(gpu, how):
    def build(name, dim, **kw):
        return _Wrong(gpu.build_loss(name, dim, **kw), how)

    cpu = torch.device("cpu")
    right = gpu.correctness_case("nt_xent", torch.float32, 16, cpu, n=40, d=16, m=23)
    assert right["pass"] and right["value_rel_err"] < 1e-6
    wrong = gpu.correctness_case("nt_xent", torch.float32, 16, cpu, n=40, d=16, m=23, build=build)
    assert not wrong["pass"]
    assert (wrong["value_rel_err"] > 5e-3) if how == "value" else (wrong["grad_rel_errs"]["z_b"] == math.inf)


def test_the_targets_are_read_off_the_cases(gpu):
    def case(objective, impl, n, ms, peak, fraction=None):
        c = {"objective": objective, "impl": impl, "n": n, "status": "ok", "ms": ms, "peak_bytes": peak}
        return c if fraction is None else {**c, "matmul_fraction": fraction}

    cases = [
        case("siglip", "contrasphere", 65_536, 90.0, 1.5e9, 0.6),
        case("siglip", "siglip_kernel", 65_536, 50.0, 1.4e9),
        case("clip", "contrasphere", 65_536, 40.0, 3e9, 0.4),
        case("clip", "inf_cl", 65_536, 20.0, 4e9),
    ]
    t = gpu.targets(cases)
    assert t["siglip_65k_vs_siglip_kernel"]["pass"] and t["siglip_65k_vs_siglip_kernel"]["time_ratio"] == 1.8
    assert not t["clip_65536_vs_inf_cl"]["pass"] and t["clip_65536_vs_inf_cl"]["time_ratio"] == 2.0
    assert t["siglip_65536_matmul_fraction"]["pass"] and not t["clip_65536_matmul_fraction"]["pass"]


def test_a_case_over_its_time_limit_is_stopped(gpu):
    t = time.monotonic()
    with pytest.raises(gpu.CaseTimeout), gpu.time_limit(0.05, True):
        while time.monotonic() - t < 5:
            pass
    assert time.monotonic() - t < 2
    with gpu.time_limit(0.05, False):  # off (the smoke run, a thread that is not the main one): nothing fires
        time.sleep(0.1)
