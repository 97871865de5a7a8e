"""Re-export names from submodules on first use, so importing a package stays cheap (PEP 562)."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(
    package_globals: dict[str, Any], exports: dict[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose ``exports`` map name -> defining module.

    Example:
        >>> namespace = {"__name__": "demo"}
        >>> get, names = lazy_exports(namespace, {"sqrt": "math"})
        >>> get("sqrt")(9.0), "sqrt" in names()
        (3.0, True)
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(
                f"module {package_globals['__name__']!r} has no attribute {name!r}"
            )
        value = getattr(importlib.import_module(exports[name]), name)
        package_globals[name] = value  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(package_globals) | set(exports))

    return __getattr__, __dir__
