"""``contrasphere metrics``, run in-process through ``main(argv)``: every file format, pairs, subsets, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import near, sphere
from safetensors.torch import save_file

from contrasphere import metrics
from contrasphere.cli import main


def test_metrics_example(tmp_path, capsys):
    out = tmp_path / "m.json"
    assert main(["metrics", "--example", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert "alignment (alpha=2)" in printed and "uniformity (t=2)" in printed and str(out) in printed
    assert result["n"] == 1797 and result["dim"] == 64
    # the example is raw pixels: norms far from 1, metrics measured on the sphere
    assert result["norms"]["mean"] > 10
    assert 0 < result["alignment"] < 4 and result["uniformity_optimum"] < result["uniformity"] < 0
    z = np.load(result["embeddings"])
    assert result["uniformity"] == pytest.approx(metrics.uniformity(z), abs=1e-9)
    # the geometry beyond alignment and uniformity, the digits and their shifted copies as LiDAR's 2 views
    positives = np.load(result["positives"])
    for row in ("Wasserstein uniformity", "anisotropy", "alpha-ReQ", "LiDAR", "cosine to positives"):
        assert f"\n{row} " in printed
    assert result["anisotropy"] == pytest.approx(metrics.anisotropy(z), abs=1e-12)
    assert result["wasserstein_uniformity"] == pytest.approx(metrics.wasserstein_uniformity(z), abs=1e-12)
    assert result["alpha_req"] == pytest.approx(metrics.alpha_req(z), abs=1e-12)
    assert result["lidar"] == pytest.approx(metrics.lidar([z, positives]), abs=1e-9)
    assert result["lidar_views"] == 2 and result["lidar_samples"] == 1797 and len(result["views"]) == 2
    assert result["modality_spread"] == pytest.approx(metrics.modality_spread(z, positives), abs=1e-12)
    assert -math.sqrt(2) < result["wasserstein_uniformity"] < 0 and 0 < result["anisotropy"] < 1


@pytest.mark.parametrize("suffix", [".npy", ".pt", ".safetensors"])
def test_metrics_reads_every_format(tmp_path, suffix):
    z = sphere(64, 8, seed=41, dtype=torch.float32)
    pos = near(z, 0.3)
    emb, positives = tmp_path / f"z{suffix}", tmp_path / f"p{suffix}"
    if suffix == ".npy":
        np.save(emb, z.numpy()), np.save(positives, pos.numpy())
    elif suffix == ".pt":
        torch.save(z, emb), torch.save({"emb": pos}, positives)
    else:
        save_file({"z": z}, str(emb)), save_file({"emb": pos, "other": z}, str(positives))
    pos_arg = str(positives) if suffix == ".npy" else f"{positives}:emb"
    out = tmp_path / "out" / "r.json"
    assert main(["metrics", str(emb), "--positives", pos_arg, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["alignment"] == pytest.approx(metrics.alignment(z, pos), abs=1e-9)
    assert result["modality_gap"] == pytest.approx(metrics.modality_gap(z, pos), abs=1e-9)


def test_metrics_with_pairs_and_subset(tmp_path):
    z = sphere(300, 5, seed=42, dtype=torch.float32)
    np.save(tmp_path / "z.npy", z.numpy())
    np.save(tmp_path / "pairs.npy", np.array([[0, 1], [5, 9], [7, 2]]))
    out = tmp_path / "r.json"
    args = [
        "metrics",
        str(tmp_path / "z.npy"),
        "--pairs",
        str(tmp_path / "pairs.npy"),
        "--max-points",
        "100",
        "--out",
        str(out),
        "--t",
        "3",
    ]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["n_pairs"] == 3 and result["uniformity_points"] == 100
    assert result["uniformity"] == pytest.approx(metrics.uniformity(z, t=3, max_points=100), abs=1e-9)


def test_metrics_with_views(tmp_path, capsys):
    """LiDAR from V files of (N, D) or one (V, N, D) file; without views it is left out."""
    z = sphere(80, 6, seed=43, dtype=torch.float32)
    views = torch.stack([near(z, 0.2, seed=s) for s in range(3)])
    np.save(tmp_path / "z.npy", z.numpy())
    np.save(tmp_path / "views.npy", views.numpy())
    for v in range(3):
        np.save(tmp_path / f"v{v}.npy", views[v].numpy())
    want = metrics.lidar(views)
    for files in (["views.npy"], ["v0.npy", "v1.npy", "v2.npy"]):
        out = tmp_path / "r.json"
        args = ["metrics", str(tmp_path / "z.npy"), "--views", *[str(tmp_path / f) for f in files], "--out", str(out)]
        assert main(args) == 0
        result = json.loads(out.read_text())
        assert result["lidar"] == pytest.approx(want, abs=1e-9) and result["lidar_views"] == 3
        assert "LiDAR " in capsys.readouterr().out
    assert main(["metrics", str(tmp_path / "z.npy"), "--out", str(tmp_path / "plain.json")]) == 0
    printed = capsys.readouterr().out
    plain = json.loads((tmp_path / "plain.json").read_text())
    assert "lidar" not in plain and "LiDAR" not in printed and "cosine to positives" not in printed
    assert plain["alpha_req"] == pytest.approx(metrics.alpha_req(z), abs=1e-9) and "alpha-ReQ " in printed
    # bad views: one (N, D) file, two views of different sizes, --views with --example
    assert main(["metrics", str(tmp_path / "z.npy"), "--views", str(tmp_path / "v0.npy")]) == 2
    assert "views must have shape (V, N, D)" in capsys.readouterr().err
    np.save(tmp_path / "short.npy", views[1, :50].numpy())
    assert (
        main(["metrics", str(tmp_path / "z.npy"), "--views", str(tmp_path / "v0.npy"), str(tmp_path / "short.npy")])
        == 2
    )
    assert "same shape" in capsys.readouterr().err
    assert main(["metrics", "--example", "--views", str(tmp_path / "views.npy")]) == 2
    assert "give no embedding file" in capsys.readouterr().err


def test_metrics_prints_a_collapsed_set(tmp_path, capsys):
    np.save(tmp_path / "one.npy", np.tile(np.array([[3.0, 4.0, 0.0]], dtype=np.float32), (5, 1)))
    assert main(["metrics", str(tmp_path / "one.npy"), "--out", str(tmp_path / "r.json")]) == 0
    printed = capsys.readouterr().out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["alpha_req"] is None and "no decay to fit" in printed
    assert result["anisotropy"] == pytest.approx(1.0) and result["wasserstein_uniformity"] == pytest.approx(
        -math.sqrt(2)
    )


def test_metrics_errors_are_clear(tmp_path, capsys):
    assert main(["metrics", str(tmp_path / "missing.npy")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "z.csv").write_text("1,2\n")
    assert main(["metrics", str(tmp_path / "z.csv")]) == 2
    assert "unsupported file type" in capsys.readouterr().err
    (tmp_path / "bad.npy").write_bytes(b"not a numpy file")
    assert main(["metrics", str(tmp_path / "bad.npy")]) == 2
    assert "could not read it" in capsys.readouterr().err
    save_file({"a": torch.ones(3, 2), "b": torch.ones(3, 2)}, str(tmp_path / "two.safetensors"))
    assert main(["metrics", str(tmp_path / "two.safetensors")]) == 2
    assert "holds 2 tensors" in capsys.readouterr().err
    assert main(["metrics", f"{tmp_path / 'two.safetensors'}:c"]) == 2
    assert "no tensor named 'c'" in capsys.readouterr().err
    np.save(tmp_path / "one.npy", np.ones((1, 4), dtype=np.float32))
    assert main(["metrics", str(tmp_path / "one.npy")]) == 2
    assert "at least 2" in capsys.readouterr().err
    np.save(tmp_path / "raw.npy", np.full((4, 2), 5.0, dtype=np.float32))
    assert main(["metrics", str(tmp_path / "raw.npy"), "--no-normalize"]) == 2
    assert "not on the unit sphere" in capsys.readouterr().err
    assert main(["metrics"]) == 2
    assert "give an embedding file" in capsys.readouterr().err
