"""The layering holds: no system imports another; ``atomistic/`` and ``train/`` import no system."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "quintet"
SYSTEMS = ("leignn", "deeprelax", "definet", "fedaux", "medaugment")
SHARED = ("atomistic", "train")


def _imports(path: Path) -> set[str]:
    """Every ``quintet.<x>`` package a module imports (at any depth in the file)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found |= {n.split(".")[1] for n in names if n.startswith("quintet.") and n.count(".") >= 1}
    return found


def _offenders(package: str, forbidden: set[str]) -> list[str]:
    return [
        f"{p.relative_to(SRC)} imports quintet.{other}"
        for p in sorted((SRC / package).rglob("*.py"))
        for other in sorted(_imports(p) & forbidden)
    ]


@pytest.mark.parametrize("system", SYSTEMS)
def test_no_system_imports_another(system: str) -> None:
    assert _offenders(system, set(SYSTEMS) - {system}) == []


@pytest.mark.parametrize("package", SHARED)
def test_shared_layers_import_no_system(package: str) -> None:
    assert _offenders(package, set(SYSTEMS)) == []


def test_the_checker_sees_imports(tmp_path: Path) -> None:
    mod = tmp_path / "m.py"
    mod.write_text("import quintet.definet.model\ndef f():\n    from quintet.leignn import run\n")
    assert _imports(mod) == {"definet", "leignn"}


def test_no_private_name_is_imported_across_modules() -> None:
    found = []
    for p in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("quintet"):
                found += [f"{p.relative_to(SRC)}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert [f for f in found if not f.endswith(".__version__")] == []
