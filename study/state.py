"""The study's state on disk: settings fingerprints and JSON files written atomically.

A run's ``done.json`` is written last, by :func:`write_json` (a temporary file renamed over the
target), so it exists only when the run finished; :func:`fingerprint` of the settings it records
tells a rerun whether the finished run still matches the configuration.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "done.json"
    >>> write_json(path, {"loyalty": float("nan"), "fingerprint": fingerprint({"seed": 0})})
    >>> read_json(path)["loyalty"] is None
    True
    >>> read_json(path.with_name("absent.json")) is None
    True
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["fingerprint", "json_safe", "read_json", "write_json"]


def fingerprint(data: Any) -> str:
    """A short hash of JSON-ready ``data`` (key order does not matter)."""
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def json_safe(value: Any) -> Any:
    """NaN and infinities become null: results.json stays strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return json_safe(value.item())
    return value


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` to ``path`` atomically (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(json_safe(data), indent=2, allow_nan=False), encoding="utf-8")
    os.replace(temporary, path)


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (e.g. half-written)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
