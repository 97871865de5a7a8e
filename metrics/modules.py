"""Where the ``evaluate`` modules shipped with loyalkit live on disk."""

from __future__ import annotations

from pathlib import Path

METRIC_NAMES: tuple[str, ...] = ("loyalty", "label_loyalty", "probability_loyalty")

#: Files every metric folder must hold to be a complete Hub metric Space.
SPACE_FILES: tuple[str, ...] = ("{name}.py", "README.md", "app.py", "requirements.txt")


def module_path(name: str) -> Path:
    """The folder of one metric module, for ``evaluate.load(str(module_path("loyalty")))``.

    Example:
        >>> module_path("loyalty").name
        'loyalty'
    """
    if name not in METRIC_NAMES:
        raise ValueError(f"`name` must be one of {METRIC_NAMES}, got {name!r}")
    return Path(__file__).resolve().parent / name
