"""The core needs torch and numpy only: it imports and computes with the optional packages hidden."""

import subprocess
import sys

import pytest

SCRIPT = """
import sys
for name in ("scipy", "matplotlib", "safetensors", "sklearn", "transformers", "torchvision"):
    sys.modules[name] = None  # any import of these now fails
import torch
import contrasphere
from contrasphere import functional as CF, metrics, evaluation
from contrasphere.cli import main
z = torch.nn.functional.normalize(torch.randn(64, 8), dim=1)
for name in contrasphere.list_losses():
    assert contrasphere.loss_spec(name)
assert torch.isfinite(CF.align_uniform(z, z.roll(1, 0)))
r = metrics.report(z, z.roll(1, 0))
assert r["uniformity_optimum"] is None  # needs scipy: left out, not an error
assert main(["metrics", "--example", "--out", sys.argv[1]]) == 0
try:
    CF.uniformity(z, offset="sphere")
except ImportError as err:
    assert "contrasphere[stats]" in str(err)
else:
    raise AssertionError("the sphere offset needs scipy and must say so")
print("ok")
"""


@pytest.mark.slow
def test_core_works_without_optional_packages(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "m.json")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
