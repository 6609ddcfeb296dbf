"""contrasphere.integrations imports nothing heavy, and a module whose extra is missing says how to install it."""

import subprocess
import sys

import pytest

SCRIPT = """
import sys
for name in ("torchmetrics", "transformers", "accelerate", "lightning", "pytorch_lightning"):
    sys.modules[name] = None  # any import of these now fails
import contrasphere
import contrasphere.integrations
for module, extra in (("torchmetrics", "torchmetrics"), ("hf", "hf"), ("lightning", "lightning")):
    try:
        __import__(f"contrasphere.integrations.{module}")
    except ImportError as err:
        assert f"pip install 'contrasphere[{extra}]'" in str(err), err
    else:
        raise AssertionError(f"contrasphere.integrations.{module} imported without its extra")
print("ok")
"""


@pytest.mark.slow
def test_integrations_need_only_their_own_extra():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]
