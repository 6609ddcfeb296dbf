"""Shared test helpers: points on the sphere, their positives, a loss with what it needs to know of the data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

if not torch.cuda.is_available():
    # Triton's interpreter runs the engine's GPU kernels on CPU tensors (tests/test_triton_kernels.py). Triton reads
    # the variable when it is first imported, which torch._dynamo does for several integrations before those tests
    # are collected: set here, before any test module is imported. It changes nothing for code that is not Triton.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def sphere(n: int, d: int, *, seed: int = 0, dtype: torch.dtype = torch.float64, grad: bool = False) -> torch.Tensor:
    """``n`` points drawn uniformly on the unit sphere in ``R^d`` (a leaf tensor when ``grad``)."""
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1).to(dtype)
    return z.requires_grad_(grad)


def near(z: torch.Tensor, noise: float, *, seed: int = 1) -> torch.Tensor:
    """Positives: ``z`` perturbed and projected back onto the sphere."""
    g = torch.Generator().manual_seed(seed)
    return F.normalize(z.detach() + noise * torch.randn(z.shape, generator=g, dtype=z.dtype), dim=1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def make_loss(name: str, dim: int, **kwargs):
    """``create_loss`` with what a loss needs to know of the embeddings (SwAV's prototypes have a dimension)."""
    import contrasphere

    if name == "swav":
        kwargs = {"dim": dim, "num_prototypes": 10, **kwargs}
    if name == "amcl":  # its temperature network has the embeddings' dimension; one projection head
        kwargs = {"dim": dim, "num_heads": 1, **kwargs}
    if name == "supervised_ce":  # its classifier has the embeddings' dimension; room for every test's labels
        kwargs = {"dim": dim, "num_classes": 64, **kwargs}
    if name in ("isogclr", "sogclr"):  # per-sample state for a training set of this size
        kwargs = {"num_samples": 1000, **kwargs}
    return contrasphere.create_loss(name, **kwargs)


def grad_pair(fn, z_a, z_b):
    """``fn(z_a, z_b)`` and its gradients with respect to both inputs: ``(value, grad_a, grad_b)``."""
    value = fn(z_a, z_b)
    return (value.detach(), *torch.autograd.grad(value, (z_a, z_b)))


# Datasets for the tests that read real files: the tiny synthetic copies in tests/fixtures/ (every checkout has them;
# tests/fixtures/make_fixtures.py writes them) and ../shared/data next to the repository (developer machines and CI).
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATA_SOURCES = {"fixtures": FIXTURES, "shared": SHARED_DATA}


@pytest.fixture(params=list(DATA_SOURCES))
def data_source(request, monkeypatch, tmp_path_factory) -> str:
    """Run the test twice: on tests/fixtures (always) and on ../shared/data (skipped where this checkout has none).

    ``CONTRASPHERE_DATA`` points at the chosen folder (the loaders look there first, so neither source can stand in
    for the other), and ``CONTRASPHERE_CACHE`` at a session-wide folder of that source alone: the decoded images
    and frozen-tower features of one are never returned for the other (some cache keys hold only image names).
    Returns ``"fixtures"`` or ``"shared"``.
    """
    root = DATA_SOURCES[request.param]
    if not root.is_dir():
        pytest.skip(f"needs ../shared/data ({root} is absent); the 'fixtures' variant runs without it")
    monkeypatch.setenv("CONTRASPHERE_DATA", str(root))
    monkeypatch.setenv("CONTRASPHERE_CACHE", str(tmp_path_factory.getbasetemp() / f"cache-{request.param}"))
    return request.param


def _forked_rank(rank, worker, *args):
    torch.set_num_threads(1)  # the parent's OpenMP thread pool does not survive the fork: run the rank on one thread
    worker(rank, *args)


def run_forked_ranks(worker, *args, world=2, limit=120.0):
    """``worker(rank, *args)`` on ``world`` forked processes. Forked, not spawned, so that the ranks inherit the
    imported libraries instead of importing them again (seconds each); a rank that does not finish within ``limit``
    seconds fails the test instead of hanging it."""
    import time

    import torch.multiprocessing as mp

    context = mp.start_processes(_forked_rank, args=(worker, *args), nprocs=world, join=False, start_method="fork")
    deadline = time.monotonic() + limit
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {world} ranks did not finish within {limit:.0f} s")
