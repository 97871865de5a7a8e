"""A stand-in for ``huggingface_hub.HfApi`` in the push tests: records calls, keeps the uploads.

Example:
    >>> # hub = FakeHub(spaces=True); push_metric_spaces("someone", api=hub); hub.uploaded
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


class FakeHub:
    """Records the HfApi calls and snapshots each uploaded folder (it is deleted afterwards):
    ``uploaded[repo_id]`` maps each file's path in the folder to its bytes."""

    def __init__(self, spaces: bool = False) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.uploaded: dict[str, dict[str, bytes]] = {}
        self._root = "https://huggingface.co/spaces" if spaces else "https://huggingface.co"

    def create_repo(self, repo_id: str, **kwargs: Any) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))
        return f"{self._root}/{repo_id}"

    def upload_folder(self, **kwargs: Any) -> None:
        self.calls.append(("upload_folder", kwargs))
        folder = Path(kwargs["folder_path"])
        self.uploaded[kwargs["repo_id"]] = {
            p.relative_to(folder).as_posix(): p.read_bytes()
            for p in folder.rglob("*")
            if p.is_file()
        }


def fingerprint(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (``__pycache__`` aside): proof a push left it alone."""
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }
