"""Seed ``evaluate``'s module cache with loyalkit's metrics: ``evaluate.load("loyalty")`` offline.

``evaluate.load("NAME")`` tries the Hub Space ``evaluate-metric/NAME`` first and, when that fails
(no network, or ``HF_EVALUATE_OFFLINE=1``), falls back to the newest cached copy in
``$HF_MODULES_CACHE/evaluate_modules/metrics/evaluate-metric--NAME/<hash>/NAME.py``. Installing
puts each module there exactly as a Hub download would, using ``evaluate``'s own functions.

Example (into a scratch cache; ``evaluate.load`` would need ``HF_MODULES_CACHE`` pointing there):
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as cache:
    ...     [m.load_name for m in install_metric_modules(namespace="someone", modules_cache=cache)]
    ['someone/loyalty', 'someone/label_loyalty', 'someone/probability_loyalty']
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loyalkit.metrics.modules import METRIC_NAMES, module_path

#: The namespace of canonical metrics: bare ``evaluate.load("NAME")`` looks in its cache folder.
CANONICAL_NAMESPACE = "evaluate-metric"


@dataclass(frozen=True)
class InstalledModule:
    """One metric module placed in ``evaluate``'s cache."""

    name: str
    #: What to pass to ``evaluate.load``: ``"loyalty"`` or ``"someone/loyalty"``.
    load_name: str
    #: The cached ``NAME.py`` that ``evaluate.load(load_name)`` imports when the Hub is unreachable.
    path: Path
    #: ``evaluate``'s hash of the module code (the cache sub-folder's name).
    code_hash: str


def install_metric_modules(
    names: Sequence[str] = METRIC_NAMES,
    *,
    namespace: str = CANONICAL_NAMESPACE,
    modules_cache: str | os.PathLike[str] | None = None,
    spaces_dir: str | os.PathLike[str] | None = None,
) -> list[InstalledModule]:
    """Copy metric modules into ``evaluate``'s module cache, where its offline fallback finds them.

    Args:
        names: metrics to install, from ``METRIC_NAMES``.
        namespace: ``"evaluate-metric"`` serves bare ``evaluate.load("NAME")``; a user or
            organisation name serves ``evaluate.load("NAMESPACE/NAME")``.
        modules_cache: the ``HF_MODULES_CACHE`` folder; default: the one ``evaluate`` uses
            (``$HF_MODULES_CACHE``, else ``$HF_HOME/modules``, else
            ``~/.cache/huggingface/modules``).
        spaces_dir: a folder holding ``NAME/NAME.py`` for each name; default: the shipped modules.

    Raises:
        ValueError: an unknown name or a malformed namespace.
        FileNotFoundError: a module file is missing.
        ImportError: a library the module imports is not installed (``evaluate``'s own check).
    """
    names = check_metric_names(names)
    check_hub_namespace(namespace)
    # Imported here: ``evaluate`` pulls in torch and transformers (seconds); the CLI stays light.
    from datasets import DownloadConfig, DownloadMode
    from evaluate import loading

    dynamic_modules_path = loading.init_dynamic_modules(hf_modules_cache=modules_cache)
    installed = []
    for name in names:
        script = _module_script(name, spaces_dir)
        # The private helpers below are the exact steps HubEvaluationModuleFactory.get_module runs
        # after downloading NAME.py: they check the imported libraries and write the cache layout
        # (code hash, __init__ files, lock, metadata); a rewrite here would drift from evaluate.
        local_imports = loading._download_additional_modules(
            name=name,
            base_path=str(script.parent),
            imports=loading.get_imports(str(script)),
            download_config=DownloadConfig(),
        )
        _, code_hash = loading._create_importable_file(
            local_path=str(script),
            local_imports=local_imports,
            additional_files=[],
            dynamic_modules_path=dynamic_modules_path,
            module_namespace="metrics",
            name=f"{namespace}/{name}",
            download_mode=DownloadMode.REUSE_DATASET_IF_EXISTS,
        )
        cache_key = f"{namespace}--{name}"
        cached = Path(dynamic_modules_path, "metrics", cache_key, code_hash, f"{name}.py")
        # evaluate keeps an existing copy of identical code untouched, and its fallback picks the
        # newest file by mtime: refresh it so a later copy of other code does not shadow this one.
        cached.touch()
        _check_resolves(cache_key, code_hash, dynamic_modules_path, loading)
        load_name = name if namespace == CANONICAL_NAMESPACE else f"{namespace}/{name}"
        installed.append(InstalledModule(name, load_name, cached, code_hash))
    return installed


def check_metric_names(names: Sequence[str]) -> list[str]:
    """The names, deduplicated in order; ``ValueError`` unless all are in ``METRIC_NAMES``."""
    if isinstance(names, str):
        raise TypeError(f"`names` must be a sequence of metric names, got the string {names!r}")
    unknown = [name for name in names if name not in METRIC_NAMES]
    if unknown or not names:
        raise ValueError(
            f"`names` must be non-empty and drawn from {METRIC_NAMES}, got {list(names)}"
        )
    return list(dict.fromkeys(names))


def check_hub_namespace(namespace: str) -> None:
    """``ValueError`` unless ``namespace`` can be a Hub user or organisation name."""
    if not namespace or "/" in namespace or "--" in namespace or namespace.strip() != namespace:
        raise ValueError(
            "`namespace` must be a Hub user or organisation name (no '/', no '--', no spaces), "
            f"got {namespace!r}"
        )


def _module_script(name: str, spaces_dir: str | os.PathLike[str] | None) -> Path:
    folder = module_path(name) if spaces_dir is None else Path(spaces_dir) / name
    script = folder / f"{name}.py"
    if not script.is_file():
        raise FileNotFoundError(f"metric {name!r}: no module file at {script}")
    return script


def _check_resolves(
    cache_key: str, code_hash: str, dynamic_modules_path: str, loading: Any
) -> None:
    """Ask evaluate's offline fallback which copy it would load: it must be the one just written."""
    factory = loading.CachedEvaluationModuleFactory(
        cache_key, dynamic_modules_path=dynamic_modules_path
    )
    logger = logging.getLogger(loading.__name__)
    level = logger.level
    logger.setLevel(logging.ERROR)  # its "using the latest cached version" warning is expected here
    try:
        resolved = factory.get_module().hash
    finally:
        logger.setLevel(level)
    if resolved != code_hash:
        raise RuntimeError(
            f"evaluate would load {cache_key}/{resolved} instead of the installed {code_hash}: "
            "another copy in the cache has a newer modification time"
        )
