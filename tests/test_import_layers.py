"""The product's import graph has layers: no folder imports a folder that imports it back.

From the bottom: the ground modules (``loyalkit/*.py``: lazy exports, citation, Hub API, example
data, JSON lines, the logits loop), then ``compression/`` and ``metrics/``, ``robustness/``,
``callbacks/``, ``study/``, and the CLI (``loyalkit/cli/``, with ``loyalkit/__main__.py``) on top,
imported by nothing in the product. Every ``import`` statement is read with ``ast``, function-level
ones included (lazy imports are imports too).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Folder of the repository -> the package it is installed as (setup.cfg's package_dir).
FOLDERS = {
    "metrics": "loyalkit.metrics",
    "compression": "loyalkit.compression",
    "robustness": "loyalkit.robustness",
    "callbacks": "loyalkit.callbacks",
    "study": "loyalkit.study",
    "loyalkit/cli": "loyalkit.cli",
}
GROUND, CLI = "ground", "cli"


def layer_of_file(path: Path) -> str:
    relative = path.relative_to(ROOT).as_posix()
    if relative.startswith("loyalkit/cli/") or relative == "loyalkit/__main__.py":
        return CLI
    if relative.startswith("loyalkit/"):
        return GROUND
    return relative.split("/")[0]


def layer_of_module(name: str) -> str | None:
    """The layer a ``loyalkit...`` module belongs to; None for anything outside loyalkit."""
    if name != "loyalkit" and not name.startswith("loyalkit."):
        return None
    for folder, package in FOLDERS.items():
        if name == package or name.startswith(package + "."):
            return CLI if folder == "loyalkit/cli" else folder
    return CLI if name == "loyalkit.__main__" else GROUND


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import (the layers read absolute ones)"
            assert node.module is not None
            names.add(node.module)
            # `from loyalkit import cli` imports the subpackage loyalkit.cli.
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def product_files() -> list[Path]:
    folders = ["loyalkit", *(f for f in FOLDERS if f != "loyalkit/cli")]
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py"))


@pytest.fixture(scope="module")
def edges() -> dict[str, dict[str, list[str]]]:
    """``layer -> imported layer -> [file: module, ...]`` (imports of other layers only)."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in product_files():
        source = layer_of_file(path)
        for name in sorted(imported_modules(path)):
            target = layer_of_module(name)
            if target is not None and target != source:
                graph[source][target].append(f"{path.relative_to(ROOT)}: {name}")
    return graph


def test_the_files_are_found_and_classified() -> None:
    layers = {layer_of_file(p) for p in product_files()}
    assert layers == {GROUND, CLI, *(f for f in FOLDERS if f != "loyalkit/cli")}
    assert layer_of_module("loyalkit.cli.study") == CLI
    assert layer_of_module("loyalkit.study.runner") == "study"
    assert layer_of_module("loyalkit.lazy_exports") == GROUND
    assert layer_of_module("transformers") is None


def test_no_folder_imports_a_folder_that_imports_it_back(edges) -> None:
    # Depth-first search for a cycle in the layer graph; report the first one with its imports.
    def cycle_from(start: str, node: str, path: list[str]) -> list[str] | None:
        for target in edges.get(node, {}):
            if target == start:
                return [*path, target]
            if target not in path:
                found = cycle_from(start, target, [*path, target])
                if found:
                    return found
        return None

    for layer in list(edges):
        cycle = cycle_from(layer, layer, [layer])
        if cycle:
            where = [edges[a][b][0] for a, b in zip(cycle, cycle[1:], strict=False)]
            pytest.fail(f"import cycle {' -> '.join(cycle)}: {where}")


def test_the_ground_imports_nothing_above_it(edges) -> None:
    assert dict(edges.get(GROUND, {})) == {}


def test_the_cli_is_imported_by_nothing_in_the_product(edges) -> None:
    importers = {source: targets[CLI] for source, targets in edges.items() if CLI in targets}
    assert importers == {}
