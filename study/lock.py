"""One ``study run`` per output folder: a lock file naming the process that holds it.

The lock is ``<output>/study.lock``, created exclusively, holding the pid, host name and start time.
A second run on the folder stops with a message naming the holder. A lock is stale when it was
written on this host by a process that no longer exists (killed, crashed): it is then taken over
with a warning. A lock from another host cannot be checked from here and is never taken over: the
message says to delete it once that run is known to be gone.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> with study_lock(folder):
    ...     (folder / "study.lock").is_file()
    True
    >>> (folder / "study.lock").exists()
    False
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LOCK_NAME", "StudyLockedError", "study_lock"]

LOCK_NAME = "study.lock"

logger = logging.getLogger(__name__)


class StudyLockedError(RuntimeError):
    """Another ``study run`` is using the output folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _holder(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _try_create(path: Path, data: dict[str, object]) -> bool:
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump(data, file)
    return True


@contextlib.contextmanager
def study_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s lock while the block runs; raise :class:`StudyLockedError` when taken."""
    path = Path(folder) / LOCK_NAME
    host = socket.gethostname()
    mine = {
        "pid": os.getpid(),
        "host": host,
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    for _ in range(3):
        if _try_create(path, mine):
            break
        holder = _holder(path)
        if holder is None:  # being written this instant, or garbage: look again, then judge
            holder = {}
        pid, where = holder.get("pid"), holder.get("host")
        if isinstance(pid, int) and where == host and not _alive(pid):
            logger.warning("study: taking over a stale lock %s (pid %d has ended)", path, pid)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        raise StudyLockedError(
            f"output folder {str(folder)!r} is in use by another `loyalkit study run` (pid {pid} "
            f"on host {where}, since {holder.get('started')}); wait for it to finish or choose "
            f"another --output. If that run is gone (e.g. its machine was shut down), delete "
            f"{str(path)!r}"
        )
    else:
        raise StudyLockedError(f"could not take the lock {str(path)!r}: it keeps reappearing")
    try:
        yield
    finally:
        if _holder(path) == mine:
            path.unlink()
