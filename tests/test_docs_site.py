"""The documentation site builds with ``mkdocs build --strict`` (no warning at all) and has the pages it should.

The site (mkdocs.yml, docs/) is generated from the docstrings (mkdocstrings, static analysis), the loss registry
(docs/gen_objectives_guide.py) and README.md's sections (docs/hooks.py), so this build is what checks that those
still fit together: a broken link, an unknown README section or a registered loss without a guide entry fails it.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import contrasphere

ROOT = Path(__file__).resolve().parent.parent
DOCS_PACKAGES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers")
MISSING = [name for name in DOCS_PACKAGES if importlib.util.find_spec(name) is None]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        bool(MISSING), reason=f"the docs extra is not installed (pip install -e '.[docs]'): no {', '.join(MISSING)}"
    ),
]


def _text(page: Path) -> str:
    """The visible text of a built page (tags stripped)."""
    return re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    assert "WARNING" not in log, log
    return out


@pytest.mark.parametrize(
    "page, names",
    [
        ("api/functional", ["info_nce", "nt_xent", "uniformity", "align_uniform", "clip_loss"]),
        ("api/losses", ["create_loss", "register_loss", "GatherLoss", "MatryoshkaLoss", "InfoNCELoss", "CLIPLoss"]),
        ("api/metrics", ["uniformity", "alignment", "effective_rank", "report"]),
        ("api/pairwise", ["row_logsumexp", "sharded", "contrasphere.pairwise.ring"]),
        ("api/train", ["Recipe", "train", "get_recipe", "load_run"]),
        ("api/integrations", ["GeometryCallback", "ContrasphereLoss", "ClipLoss"]),
    ],
)
def test_api_pages_document_the_public_names(site: Path, page: str, names: list[str]) -> None:
    html = (site / page / "index.html").read_text(encoding="utf-8")
    ids = set(re.findall(r'id="(contrasphere[\w.]*)"', html))
    for name in names:
        assert any(i == name or i.endswith("." + name) for i in ids), f"{page}: no heading documents {name}"
    # the reST of the docstrings was converted (docs/griffe_rst.py): no raw role is left
    assert not re.search(r":(func|class|mod|meth|data|math):`", html), f"{page}: unconverted reST role"


def test_every_api_page_is_in_the_site(site: Path) -> None:
    for module in ["functional", "losses", "metrics", "pairwise", "evaluation", "gradcache", "moco", "distributed"]:
        assert (site / "api" / module / "index.html").exists(), module
    for module in ["viz", "io", "train", "integrations"]:
        assert (site / "api" / module / "index.html").exists(), module


def test_function_loss_modules_show_their_hyperparameters(site: Path) -> None:
    """The classes ``function_loss`` makes at import time are documented with the function's hyperparameters."""
    text = _text(site / "api" / "losses" / "index.html")
    assert "InfoNCELoss" in text and "temperature" in text and "Module form of" in text


def test_objectives_guide_lists_every_registered_loss(site: Path) -> None:
    text = _text(site / "guide-objectives" / "index.html")
    for name in contrasphere.list_losses():
        assert f" {name} " in text, f"the objectives guide misses {name}"


def test_readme_sections_are_included(site: Path) -> None:
    bench = _text(site / "guide-benchmarks" / "index.html")
    assert "bench_engine.py" in bench and "Ring mode" in bench
    index = _text(site / "index.html")
    assert "Set up and run" in index and "alignment" in index
    assert (site / "objectives" / "index.html").exists()
    assert (site / "reproduce" / "vision" / "vision_circle.png").exists()
