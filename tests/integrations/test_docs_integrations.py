"""The runnable examples of docs/integrations.md run (each block marked ``<!-- runnable ... -->``)."""

from __future__ import annotations

from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "integrations.md"
MARK = "<!-- runnable"


def runnable_blocks() -> list[str]:
    text = PAGE.read_text()
    blocks = []
    for part in text.split(MARK)[1:]:
        code = part.split("```python\n", 1)[1].split("```", 1)[0]
        blocks.append(code)
    return blocks


def test_the_page_marks_its_examples():
    assert len(runnable_blocks()) == 2


@pytest.mark.filterwarnings("ignore:.*LeafSpec")  # Lightning's own deprecation note
@pytest.mark.parametrize("index, library", [(0, "torchmetrics"), (1, "lightning")])
def test_example_runs(index, library, capsys):
    pytest.importorskip(library, reason=f"needs the {library} extra: pip install 'contrasphere[{library}]'")
    code = runnable_blocks()[index]
    exec(compile(code, f"{PAGE.name}[{index}]", "exec"), {"__name__": "__docs__"})
    if library == "lightning":
        out = capsys.readouterr().out
        assert "'train_uniformity'" in out and "'train_effective_rank'" in out
