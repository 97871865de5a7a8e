"""Doctests of the attack code need TextAttack, which lives in the compat environment only."""

from __future__ import annotations

from pathlib import Path

import pytest

_ROOT = Path(__file__).parent
_ATTACK_SOURCES = (_ROOT / "robustness", _ROOT / "callbacks" / "attack.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path))
        if isinstance(item, pytest.DoctestItem) and any(
            path == source or source in path.parents for source in _ATTACK_SOURCES
        ):
            item.add_marker(pytest.mark.attack)
