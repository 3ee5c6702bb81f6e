"""The package's shape: which wing may import which, and who may name a run file."""

import ast
from pathlib import Path

import pytest

from harness.results import store

PACKAGE = Path(__file__).resolve().parents[2] / "harness"
RUN_FILES = (
    store.MANIFEST,
    store.VERDICTS,
    store.SUMMARY,
    store.TRIALS,
    store.MEASUREMENTS,
    store.COSTS,
    store.GATES,
    store.DRIFT,
)


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {module for module in modules if module.startswith("harness")}


def wing_files(wing: str) -> list[Path]:
    return sorted((PACKAGE / wing).rglob("*.py"))


@pytest.mark.parametrize(
    ("wing", "forbidden"), [("results", ("harness.run", "harness.hosts")), ("hosts", ("harness.results",))]
)
def test_imports_go_one_way(wing, forbidden):
    offending = {
        str(path.relative_to(PACKAGE)): sorted(
            module for module in imported_modules(path) if module.startswith(forbidden)
        )
        for path in wing_files(wing)
    }
    assert {path: modules for path, modules in offending.items() if modules} == {}


def test_the_wings_hold_modules():
    assert all(wing_files(wing) for wing in ("run", "hosts", "results"))


def test_only_the_store_names_run_files():
    named = {
        str(path.relative_to(PACKAGE)): [name for name in RUN_FILES if name in path.read_text()]
        for path in PACKAGE.rglob("*.py")
        if path.name != "store.py"
    }
    assert {path: names for path, names in named.items() if names} == {}
