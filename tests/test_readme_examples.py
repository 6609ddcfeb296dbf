"""Every Python block of the README runs, in order, on tiny inputs; a shown result is the real one.

A line ``expression`` followed by a comment line holding a Python literal (``# ['align_uniform', ...]``) states
the expression's value: the test evaluates it and compares. So the README cannot drift from the code.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    parts = README.read_text().split("```")
    return [part.removeprefix("python\n") for part in parts[1::2] if part.startswith("python\n")]


def shown_results(block: str) -> list[tuple[str, object]]:
    """``(expression, literal)`` for each expression line followed by a comment line that is a literal."""
    lines = block.splitlines()
    pairs = []
    for line, after in zip(lines, lines[1:]):
        if not after.startswith("# ") or line.startswith("#") or not line.strip():
            continue
        try:
            value = ast.literal_eval(after[2:])
            ast.parse(line.split("  #")[0], mode="eval")
        except (ValueError, SyntaxError):
            continue
        pairs.append((line.split("  #")[0], value))
    return pairs


def tiny_inputs() -> dict[str, object]:
    """What the README's snippets assume exists: an encoder, two views, labels, a queue, held-out splits."""
    g = torch.Generator().manual_seed(0)
    n, d = 16, 128
    encoder = torch.nn.Linear(32, d)
    x1 = torch.randn(n, 32, generator=g)
    x2 = x1 + 0.1 * torch.randn(n, 32, generator=g)
    q = F.normalize(encoder(x1), dim=-1)
    k = F.normalize(encoder(x2), dim=-1).detach()
    z = F.normalize(torch.randn(2 * n, d, generator=g), dim=-1)
    angles = torch.rand(50, generator=g).numpy() * 6.28 - 3.14
    return {
        "encoder": encoder,
        "x1": x1,
        "x2": x2,
        "q": q,
        "k": k,
        "queue": F.normalize(torch.randn(64, d, generator=g), dim=-1),
        "optimizer": torch.optim.SGD(encoder.parameters(), lr=0.1),
        "z": z,
        "labels": torch.arange(2 * n) % 4,
        "positives": F.normalize(z + 0.1 * torch.randn(z.shape, generator=g), dim=-1),
        "image_z": F.normalize(torch.randn(10, d, generator=g), dim=-1),
        "text_z": F.normalize(torch.randn(10, d, generator=g), dim=-1),
        "train_z": torch.randn(40, 8, generator=g),
        "train_y": torch.arange(40) % 4,
        "test_z": torch.randn(20, 8, generator=g),
        "test_y": torch.arange(20) % 4,
        "gold_scores": torch.rand(n, generator=g) * 5,
        "image_of_caption": torch.arange(10),
        "image_ids": torch.arange(10),
        "z_2d": F.normalize(torch.randn(60, 2, generator=g), dim=-1),
        "y": torch.arange(60) % 3,
        "grid": torch.linspace(-3.14, 3.14, 90).numpy(),
        "angles": angles,
        "runs": [{"alignment": 0.5 + i / 10, "uniformity": -3 + i / 5, "accuracy": 40 + i} for i in range(4)],
        "history": [
            {"epoch": e, "step": 10 * e, "alignment": 0.6 - e / 20, "uniformity": -2 - e / 10} for e in range(4)
        ],
        "views": F.normalize(z + 0.1 * torch.randn(3, *z.shape, generator=g), dim=-1),  # 3 views of each row of z
    }


def test_the_readme_has_python_examples():
    assert len(python_blocks()) >= 6


def test_every_python_block_runs_and_shows_real_results(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)  # the figure examples write PNG files
    namespace = tiny_inputs()
    checked = 0
    for number, block in enumerate(python_blocks()):
        try:
            exec(compile(block, f"README python block {number + 1}", "exec"), namespace)
        except Exception as error:  # noqa: BLE001  (report which block failed and why)
            pytest.fail(f"README python block {number + 1} fails: {type(error).__name__}: {error}\n{block}")
        for expression, value in shown_results(block):
            assert eval(expression, namespace) == value, f"README shows {value!r} for {expression}"  # noqa: S307
            checked += 1
    assert checked >= 1, "no shown result was checked: the README should show at least one value"
    assert (tmp_path / "circle.png").exists()


def test_a_wrong_shown_result_is_caught():
    pairs = shown_results("contrasphere.list_losses()[:2]\n# ['alignment', 'align_uniform']\nx = 1\n# not a literal")
    import contrasphere

    assert pairs == [("contrasphere.list_losses()[:2]", ["alignment", "align_uniform"])]
    assert eval(pairs[0][0], {"contrasphere": contrasphere}) != pairs[0][1]  # sorted: 'align_uniform' first
