"""``contrasphere plot``, run in-process through ``main(argv)``."""

from __future__ import annotations

import json

import numpy as np
import torch

from contrasphere.cli import main


def test_plot_circle(tmp_path, capsys):
    z = torch.nn.functional.normalize(torch.randn(200, 2), dim=1)
    np.save(tmp_path / "z.npy", z.numpy())
    np.save(tmp_path / "y.npy", np.arange(200) % 4)
    out = tmp_path / "fig" / "c.png"
    assert (
        main(["plot", "circle", str(tmp_path / "z.npy"), "--labels", str(tmp_path / "y.npy"), "--out", str(out)]) == 0
    )
    assert out.read_bytes()[:4] == b"\x89PNG"
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["n"] == 200 and len(record["density"]) == len(record["grid"]) == 361
    np.save(tmp_path / "bad.npy", np.ones((5, 3), dtype=np.float32))
    assert main(["plot", "circle", str(tmp_path / "bad.npy"), "--out", str(out)]) == 2
    assert "shape (N, 2)" in capsys.readouterr().err
