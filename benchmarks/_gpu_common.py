"""What the GPU scripts (benchmarks/gpu.py, benchmarks/gpu_cifar.py) both record of the machine and the source."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def source_digest() -> str:
    """sha256 (first 16 hex digits) of every file under src/contrasphere, paths and contents, in sorted order: it
    matches a report to a tree where the device copy has no .git."""
    h = hashlib.sha256()
    base = ROOT / "src" / "contrasphere"
    for path in sorted(p for p in base.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(base)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def git(*args: str) -> str | None:
    """``git args`` in the checkout, its output stripped, or None where git or the repository is missing."""
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cuda_info(device: torch.device | int, query: str) -> dict[str, Any]:
    """The GPU's name, capability, memory, multiprocessors, and ``nvidia-smi --query-gpu=query`` (best effort)."""
    props = torch.cuda.get_device_properties(device)
    info: dict[str, Any] = {
        "gpu": torch.cuda.get_device_name(device),
        "capability": f"{props.major}.{props.minor}",
        "gpu_memory_bytes": props.total_memory,
        "multiprocessors": props.multi_processor_count,
    }
    try:
        smi = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv"], capture_output=True, text=True, timeout=10
        )
        info["nvidia_smi"] = smi.stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        info["nvidia_smi"] = f"unavailable: {err}"
    return info
