"""Push one compressed model of the study to the Hugging Face Hub with its model card.

The model folder (a ``save_pretrained`` folder: ``config.json``, weights, tokenizer files) is
uploaded as a model repository with the card as its ``README.md``; the folder itself is never
modified. A dry run validates the card offline (:func:`loyalkit.study.model_card.check_model_card`)
and lists the files it would upload, with no network.

Example (a dry run touches no network):
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "config.json").write_text("{}")
    >>> _ = (folder / "model.safetensors").write_bytes(b"0" * 10)
    >>> card = "---\\nmodel-index:\\n- name: m\\n  results:\\n  - task: {type: text-classification}\\n" \\
    ...     "    dataset: {name: d, type: d}\\n    metrics:\\n    - {type: accuracy, value: 0.8}\\n" \\
    ...     "tags: [loyalkit, compression]\\n---\\n# m\\n"
    >>> plan = push_model(folder, "someone/m", card, dry_run=True)
    >>> [name for name, _ in plan.files]
    ['README.md', 'config.json', 'model.safetensors']
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from loyalkit.hub_api import HubApi, hf_api
from loyalkit.study.model_card import check_model_card

if TYPE_CHECKING:
    from huggingface_hub import EvalResult, ModelCard

__all__ = ["WEIGHT_FILES", "PushPlan", "check_repo_id", "push_model"]

#: A model folder must hold one of these (safetensors, or the pickle transformers 4.57 writes for
#: torchao int8 weights, possibly sharded with an index; or the IR of loyalkit's OpenVINO int8).
WEIGHT_FILES: tuple[str, ...] = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "openvino_model.xml",
)


@dataclass(frozen=True)
class PushPlan:
    """What is (or, in a dry run, would be) uploaded to one model repository."""

    repo_id: str
    url: str
    #: ``(path in the repository, size in bytes)`` for every uploaded file, sorted by path.
    files: tuple[tuple[str, int], ...]
    #: The model card as uploaded (``README.md``).
    card: str
    dry_run: bool
    private: bool


def check_repo_id(repo_id: str) -> str:
    """``ValueError`` unless ``repo_id`` is ``owner/name`` as the Hub accepts it."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(
            f"`repo_id` must be 'owner/name' (a Hub user or organisation and a name), got {repo_id!r}"
        )
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"`repo_id` {repo_id!r} is not a valid Hub repository id: {err}") from err
    return repo_id


def push_model(
    model_dir: str | os.PathLike[str],
    repo_id: str,
    card: ModelCard | str,
    *,
    dry_run: bool = False,
    api: HubApi | None = None,
    private: bool = False,
    token: str | None = None,
    expected_results: Sequence[EvalResult] | None = None,
) -> PushPlan:
    """Validate the card, then create the model repo ``repo_id`` and upload ``model_dir`` with it.

    Args:
        model_dir: a ``save_pretrained`` folder (config.json and weights).
        repo_id: ``owner/name`` on the Hub.
        card: the model card (``ModelCard`` or its text), uploaded as ``README.md``.
        dry_run: validate and list the files, call no Hub API.
        api: an object with ``HfApi``'s ``create_repo`` and ``upload_folder``; default ``HfApi``.
        private: create the repository private.
        token: a Hub token; default: the one ``huggingface_hub`` finds (``HF_TOKEN``, login).
        expected_results: when given, the card's parsed model-index must equal these.
    """
    from huggingface_hub import constants

    check_repo_id(repo_id)
    folder = _check_model_dir(model_dir)
    text = str(check_model_card(card, expected_results))
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in _files(folder)}
    files["README.md"] = len(text.encode("utf-8"))
    plan = PushPlan(
        repo_id=repo_id,
        url=f"{constants.ENDPOINT}/{repo_id}",
        files=tuple(sorted(files.items())),
        card=text,
        dry_run=dry_run,
        private=private,
    )
    if dry_run:
        return plan
    hub = api if api is not None else hf_api(token)
    with tempfile.TemporaryDirectory(prefix="loyalkit-model-") as tmp:
        staged = Path(tmp, "model")
        # A copy: the card replaces any README.md without touching the study's folder.
        shutil.copytree(folder, staged, ignore=shutil.ignore_patterns(".*", "__pycache__"))
        (staged / "README.md").write_text(text, encoding="utf-8")
        hub.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        hub.upload_folder(
            repo_id=repo_id,
            folder_path=str(staged),
            repo_type="model",
            commit_message="Upload a compressed model and its loyalty/robustness card (loyalkit)",
        )
    return plan


def _check_model_dir(model_dir: str | os.PathLike[str]) -> Path:
    folder = Path(model_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"`model_dir` {str(folder)!r} is not a folder")
    if not (folder / "config.json").is_file():
        raise ValueError(
            f"`model_dir` {str(folder)!r} has no config.json (not a save_pretrained folder)"
        )
    if not any((folder / name).is_file() for name in WEIGHT_FILES):
        raise ValueError(
            f"`model_dir` {str(folder)!r} holds no weights (expected one of {', '.join(WEIGHT_FILES)})"
        )
    return folder


def _files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not any(
            part.startswith(".") or part == "__pycache__" for part in p.relative_to(folder).parts
        )
        and p.relative_to(folder).as_posix() != "README.md"
    )
