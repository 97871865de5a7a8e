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

__all__ = [
    "FINGERPRINT_VERSION",
    "TEACHER_TIMING",
    "changed_files",
    "file_digests",
    "fingerprint",
    "input_digest",
    "json_safe",
    "read_json",
    "write_json",
]

#: Bumped when what a fingerprint covers changes. Version 2 (issue 11) hashes the content of every
#: input (task files, teacher weights) instead of their path strings: study folders written before
#: it redo their runs once.
FINGERPRINT_VERSION = 2

_CHUNK = 1 << 20


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


#: The teacher's latency in the latest timing session, beside its ``done.json``.
TEACHER_TIMING = "timing.json"

#: The study's own records beside a model: not part of the model.
_RECORDS = ("done.json", "failed.json", "attack.json", "attack-done.json", TEACHER_TIMING)


def file_digests(folder: Path, skip: tuple[str, ...] = _RECORDS) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (relative POSIX path -> hex), the study's records
    (``skip``) left out.

    What a finished run records of its model, and checks again before the model is reused.
    """
    folder = Path(folder)
    return {
        path.relative_to(folder).as_posix(): _sha256(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name not in skip
    }


def changed_files(folder: Path, recorded: Any) -> list[str]:
    """The files of ``folder`` whose content differs from ``recorded`` (missing, extra or changed);
    everything when nothing usable was recorded."""
    if not isinstance(recorded, dict) or not recorded:
        return ["(no file hashes recorded)"]
    found = file_digests(folder)
    names = sorted(set(found) | set(recorded))
    return [name for name in names if found.get(name) != recorded.get(name)]


def input_digest(value: Any) -> Any:
    """What a fingerprint records of an input: a file's or folder's content hash, else ``value``.

    Paths themselves are left out, so the spelling of a path and the working folder do not matter.
    """
    if value is None:
        return None
    path = Path(str(value))
    if path.is_file():
        return {"sha256": _sha256(path)}
    if path.is_dir():
        return {"sha256": fingerprint(file_digests(path))}
    return value
