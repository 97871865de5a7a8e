"""Known third-party noise, filtered by the ``loyalkit`` command while it runs (never on import).

Seen on every CLI run before (issue 11): torchao's failed loads of its CUDA ``.so`` files (logger
``torchao``), torch's ``_pytree`` deprecation of ``register_constant`` on Enum subclasses (logger
``torch.utils._pytree``, at torchao's import), transformers' LOAD REPORT listing only the
*unexpected* keys of a student built with fewer layers than its teacher, the DataLoader's
``pin_memory`` warning on a machine without an accelerator, and evaluate's "Using the latest
cached version" when a module is loaded by name with ``HF_EVALUATE_OFFLINE=1``. Each filter
matches one message; anything else still shows. A LOAD REPORT with missing, mismatched or
converted keys is kept. ``quiet`` also silences every Python warning, transformers' and datasets'
logs below ERROR and their progress bars.

Library code never installs these filters: :func:`filtered_noise` is entered by
``loyalkit.cli.main`` only, and everything is restored on exit.

Example:
    >>> import logging
    >>> with filtered_noise():
    ...     logging.getLogger("torchao").filters != []
    True
    >>> logging.getLogger("torchao").filters
    []
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator

__all__ = ["LOGGER_NOISE", "WARNING_NOISE", "filtered_noise"]

#: Logger name -> patterns of the records dropped from it.
LOGGER_NOISE: dict[str, tuple[str, ...]] = {
    "torchao": (r"^Failed to load .*\.so",),
    "torch.utils._pytree": (r"is an Enum subclass and is now natively supported",),
    "evaluate.loading": (r"^Using the latest cached version of the module",),
    "transformers.modeling_utils": (r"LOAD REPORT",),
}

#: Python warnings (message patterns) ignored.
WARNING_NOISE: tuple[str, ...] = (
    r"'pin_memory' argument is set as true but no accelerator is found",
)

_KEPT_IN_LOAD_REPORTS = ("MISSING", "MISMATCH", "CONVERSION")


class _Drop(logging.Filter):
    def __init__(self, patterns: tuple[str, ...]) -> None:
        super().__init__()
        self.patterns = [re.compile(p) for p in patterns]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not any(p.search(message) for p in self.patterns):
            return True
        # A load report is noise only when it lists nothing but unexpected keys.
        return "LOAD REPORT" in message and any(k in message for k in _KEPT_IN_LOAD_REPORTS)


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """transformers' and datasets' logs below ERROR and their progress bars off, then restored."""
    restore = []
    with contextlib.suppress(ImportError):
        import transformers

        verbosity = transformers.logging.get_verbosity()
        bars = transformers.utils.logging.is_progress_bar_enabled()
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        restore.append(lambda: transformers.logging.set_verbosity(verbosity))
        if bars:
            restore.append(transformers.utils.logging.enable_progress_bar)
    with contextlib.suppress(ImportError):
        import datasets

        level = datasets.logging.get_verbosity()
        enabled = datasets.is_progress_bar_enabled()
        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()
        restore.append(lambda: datasets.logging.set_verbosity(level))
        if enabled:
            restore.append(datasets.enable_progress_bars)
    try:
        yield
    finally:
        for undo in reversed(restore):
            undo()


@contextlib.contextmanager
def filtered_noise(quiet: bool = False) -> Iterator[None]:
    """Drop the known third-party noise while the block runs; with ``quiet`` all but errors."""
    installed = []
    for name, patterns in LOGGER_NOISE.items():
        target, drop = logging.getLogger(name), _Drop(patterns)
        target.addFilter(drop)
        installed.append((target, drop))
    try:
        with warnings.catch_warnings():
            for pattern in WARNING_NOISE:
                warnings.filterwarnings("ignore", message=pattern)
            if quiet:
                warnings.simplefilter("ignore")
            with _quiet_libraries() if quiet else contextlib.nullcontext():
                yield
    finally:
        for target, drop in installed:
            target.removeFilter(drop)
