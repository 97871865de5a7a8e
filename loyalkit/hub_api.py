"""What loyalkit's Hub pushes (a study's model, the metric Spaces) need of ``huggingface_hub``.

:class:`HubApi` is the part of ``huggingface_hub.HfApi`` they call (a fake stands in for tests),
:func:`hf_api` the real one, and :func:`add_hub_push_options` the command-line options both push
commands take.

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_hub_push_options(parser, dry_run_help="no network", private_help="a private repo")
    >>> parser.parse_args(["--dry-run", "--token", "hf_x"])
    Namespace(dry_run=True, private=False, token='hf_x')
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Protocol

__all__ = ["HubApi", "add_hub_push_options", "hf_api"]


class HubApi(Protocol):
    """The two ``huggingface_hub.HfApi`` methods a push uses (a fake one stands in for tests)."""

    def create_repo(
        self,
        repo_id: str,
        *,
        private: bool | None = ...,
        repo_type: str | None = ...,
        exist_ok: bool = ...,
        space_sdk: str | None = ...,
    ) -> Any: ...

    def upload_folder(
        self,
        *,
        repo_id: str,
        folder_path: str | Path,
        commit_message: str | None = ...,
        repo_type: str | None = ...,
        delete_patterns: list[str] | str | None = ...,
    ) -> Any: ...


def hf_api(token: str | None) -> HubApi:
    """``huggingface_hub.HfApi(token=token)``; ``None`` lets it find one (``HF_TOKEN``, login)."""
    from huggingface_hub import HfApi

    return HfApi(token=token)


def add_hub_push_options(
    parser: argparse.ArgumentParser, *, dry_run_help: str, private_help: str
) -> None:
    """Add ``--dry-run``, ``--private`` and ``--token`` (a Hub token with write access)."""
    parser.add_argument("--dry-run", action="store_true", help=dry_run_help)
    parser.add_argument("--private", action="store_true", help=private_help)
    parser.add_argument(
        "--token",
        metavar="T",
        help="Hub token with write access (default: HF_TOKEN, or the token of `hf auth login`)",
    )
