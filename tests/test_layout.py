"""The import rules between the package's layers, read from the source (no import needed).

The core (engine, math, losses, metrics and friends) imports only the standard library, torch and numpy at module
level and never anything of the trainer, the reproductions or the command line; each core unit imports only the
units below it; only ``contrasphere.distributed`` touches ``torch.distributed``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "contrasphere"

# each core unit and the core units it may import (a unit may always import itself)
CORE = {
    "errors": set(),
    "_validate": {"errors"},
    "distributed": set(),
    "io": {"errors"},
    "pairwise": {"_validate", "errors", "distributed"},  # the sharded reductions combine partial results
    "functional": {"_validate", "pairwise", "errors"},
    "losses": {"_validate", "pairwise", "functional", "distributed", "errors"},
    "metrics": {"_validate", "pairwise", "functional", "errors"},
    "evaluation": {"_validate", "errors"},
    "gradcache": {"_validate", "errors"},
    "moco": {"_validate", "distributed", "errors"},
    "viz": {"_validate", "errors"},
    "__init__": {"functional", "losses", "metrics", "_validate"},  # _validate: the package-wide value-check switch
}
UPPER = {  # the layers above the core, bottom up, and what each may import besides the core
    "train": {"train"},
    "reproduce": {"train", "reproduce"},
    "cli": {"train", "reproduce", "cli"},
    # adapters for other libraries' trainers and metrics (torchmetrics, transformers, lightning, ...): the core and
    # each other only, never the trainer; each imports its own extra at module level, and nothing imports them
    "integrations": {"integrations"},
}
CORE_THIRD_PARTY = {"torch", "numpy"}  # at module level; optional extras are imported inside functions
# modules that exist for one optional package (kernels defined at module level) and that nothing imports at module
# level: the core still imports with torch and numpy alone (test_optional_modules_are_imported_lazily)
OPTIONAL_MODULES = {"pairwise/_triton.py": {"triton"}}


def _unit(path: Path) -> str:
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _package(path: Path) -> list[str]:
    rel = path.relative_to(SRC.parent).with_suffix("")
    return list(rel.parts[:-1])


def _imports(path: Path) -> list[tuple[str, bool]]:
    """``(absolute module name, at module level)`` for every import in ``path``; ``from pkg import name`` gives
    ``pkg.name`` where that is a module of this package."""
    tree = ast.parse(path.read_text())

    def lazy(node: ast.AST) -> bool:  # a function body, or an `if TYPE_CHECKING:` block (never run)
        checking = isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        return checking or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))

    nested = {id(n) for f in ast.walk(tree) if lazy(f) for n in ast.walk(f)}
    found = []
    for node in ast.walk(tree):
        top = id(node) not in nested
        if isinstance(node, ast.Import):
            found += [(alias.name, top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = _package(path)
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                as_path = SRC.parent.joinpath(*sub.split("."))
                found.append((sub if as_path.with_suffix(".py").exists() or as_path.is_dir() else base, top))
    return found


def _own_unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "contrasphere":
        return None
    return parts[1] if len(parts) > 1 else "__init__"


FILES = sorted(SRC.rglob("*.py"))


def test_every_file_belongs_to_a_known_layer():
    unknown = sorted({_unit(p) for p in FILES} - set(CORE) - set(UPPER))
    assert not unknown, f"add {unknown} to the layer tables of tests/test_layout.py"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_imports_point_down_only(path: Path):
    unit = _unit(path)
    allowed = CORE[unit] | {unit} if unit in CORE else set(CORE) | UPPER[unit]
    for module, top in _imports(path):
        target = _own_unit(module)
        if target is not None:
            assert target in allowed, f"{path.relative_to(SRC)} imports {module}: {unit} may import {sorted(allowed)}"
        elif unit in CORE and top:
            root = module.split(".")[0]
            if root in OPTIONAL_MODULES.get(str(path.relative_to(SRC)), set()):
                continue
            assert root in CORE_THIRD_PARTY or root in sys.stdlib_module_names or root == "__future__", (
                f"{path.relative_to(SRC)} imports {module} at module level: the core needs only torch and numpy; "
                "import optional packages inside the function that needs them"
            )


def test_optional_modules_are_imported_lazily():
    modules = {"contrasphere." + p.removesuffix(".py").replace("/", ".") for p in OPTIONAL_MODULES}
    for path in FILES:
        for module, top in _imports(path):
            assert not (top and module in modules), f"{path.relative_to(SRC)} imports {module} at module level"


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(SRC)))
def test_only_distributed_talks_to_torch_distributed(path: Path):
    if path == SRC / "distributed.py":
        return
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        imported = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom):
            imported = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
        attribute = (
            isinstance(node, ast.Attribute)
            and node.attr == "distributed"
            and isinstance(node.value, ast.Name)
            and node.value.id == "torch"
        )
        assert attribute or not any(m == "torch.distributed" or m.startswith("torch.distributed.") for m in imported)
        assert not attribute, f"{path.relative_to(SRC)} uses torch.distributed; go through contrasphere.distributed"


def test_the_rules_catch_a_violation(tmp_path):
    """The reader above sees relative, absolute and nested imports (so the rules cannot pass vacuously)."""
    path = SRC / "losses" / "registry.py"
    modules = {m for m, _ in _imports(path)}
    assert "contrasphere._validate" in modules and "torch" in modules
    assert _own_unit("contrasphere.train.loop") == "train" and "train" not in CORE["losses"]
    nested = {m: top for m, top in _imports(SRC / "viz.py")}
    assert nested.get("matplotlib.pyplot") is False or nested.get("matplotlib") is False
