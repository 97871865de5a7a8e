"""The study: compress a teacher every way and report accuracy, loyalty and robustness.

``config`` (what to run: task, teacher, methods, attack, seeds; presets ``quick`` and ``paper``),
``task_data`` (the task's data), ``methods`` (one file per compression method: its settings and
how it builds the student, on ``loyalkit.compression`` and ``loyalkit.callbacks`` in a plain
``Trainer``), ``measure`` (size, latency, accuracy, loyalty), ``timing`` (each run timed once
with the teacher, and the load it saw), ``runner`` (the resumable run),
``records`` (the typed ``results.json``), ``report``/``plots`` (the table and figures),
``model_card``/``hub_push`` (publishing a compressed model). The command line is
``loyalkit study`` (``loyalkit.cli.study``). Names below are re-exported lazily.

Example::

    from loyalkit.study import load_config, run_study
    results = run_study(load_config("study.yaml"))
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loyalkit.lazy_exports import lazy_exports

# name -> module that defines it
_EXPORTS: dict[str, str] = {
    "StudyConfig": "loyalkit.study.config",
    "TaskConfig": "loyalkit.study.task_data",
    "load_config": "loyalkit.study.config",
    "load_task": "loyalkit.study.task_data",
    "preset": "loyalkit.study.config",
    "read_results": "loyalkit.study.records",
    "run_study": "loyalkit.study.runner",
    "write_report": "loyalkit.study.report",
}

__all__ = [
    "StudyConfig",
    "TaskConfig",
    "load_config",
    "load_task",
    "preset",
    "read_results",
    "run_study",
    "write_report",
]

if TYPE_CHECKING:
    from loyalkit.study.config import StudyConfig, load_config, preset
    from loyalkit.study.records import read_results
    from loyalkit.study.report import write_report
    from loyalkit.study.runner import run_study
    from loyalkit.study.task_data import TaskConfig, load_task


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
