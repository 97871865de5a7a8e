"""Doctests of the worker-side attack code import TextAttack in-process: the compat environment only."""

from __future__ import annotations

from pathlib import Path

import pytest

_ROOT = Path(__file__).parent
_ATTACK_SOURCES = (_ROOT / "robustness",)
# Modules of the user's side (no TextAttack in the process): their doctests run everywhere.
_USER_SIDE = {
    _ROOT / "robustness" / name
    for name in (
        "attack_env.py",
        "protocol.py",
        "isolated.py",
        "isolated_job.py",
        "attack_worker.py",
    )
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.path))
        if (
            isinstance(item, pytest.DoctestItem)
            and path not in _USER_SIDE
            and any(path == source or source in path.parents for source in _ATTACK_SOURCES)
        ):
            item.add_marker(pytest.mark.attack)
