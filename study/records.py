"""Typed records of what the study writes and reads back: ``results.json`` and the runs in it.

``results.json`` is :meth:`StudyResults.to_dict`; :func:`read_results` reads it back as records,
strictly (an unknown key, or a missing one that identifies the record, is an error naming it;
other missing values read as None). Older files are migrated on reading: version 1 (written before
the ``schema_version`` key existed) and version 2 have the same fields as version 3 but for
``timing``, which reads as None (the timing conditions were not recorded: their speed-ups carry no
load average). So the studies kept in ``benchmarks/`` stay readable. Fractions are in [0, 1]; None
marks what was not measured.

Example:
    >>> run = RunRecord(method="int8-ptq", title="Q8-PTQ", seed=0)
    >>> run.status, run.accuracy
    ('failed', None)
    >>> RunRecord.from_dict({**run.to_dict(), "status": "done", "accuracy": 0.9}).accuracy
    0.9
    >>> RunRecord.from_dict({"method": "kd", "seed": 0, "acuracy": 0.9})
    Traceback (most recent call last):
    ...
    ValueError: run: unknown key 'acuracy'
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

__all__ = [
    "READABLE_VERSIONS",
    "SCHEMA_VERSION",
    "RunRecord",
    "StudyResults",
    "TeacherRecord",
    "TimingRecord",
    "as_results",
    "as_runs",
    "read_results",
]

#: Version of ``results.json``. 2 adds the ``schema_version`` key (version 1 had no such key); 3 adds
#: ``timing`` to the teacher and every run (issue 14: latency measured once, with its load).
SCHEMA_VERSION = 3

#: The versions :meth:`StudyResults.from_dict` reads; older ones differ only by missing keys.
READABLE_VERSIONS = (1, 2, SCHEMA_VERSION)

Record = TypeVar("Record", bound="_Record")


def _check_keys(path: str, data: Mapping[str, Any], declared: tuple[Field[Any], ...]) -> None:
    """Refuse a key the record does not declare, or a required one that is missing."""
    unknown = [key for key in data if key not in {item.name for item in declared}]
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r}")
    required = [item.name for item in declared if item.default is item.default_factory is MISSING]
    missing = [name for name in required if name not in data]
    if missing:
        raise ValueError(f"{path}: missing key {missing[0]!r}")


class _Record:
    """``from_dict`` / ``to_dict`` for a dataclass of JSON values; the fields named in ``_nested``
    hold another record (or None)."""

    _nested: ClassVar[dict[str, type[_Record]]] = {}

    @classmethod
    def from_dict(cls: type[Record], data: Any, path: str = "") -> Record:
        path = path or cls.__name__.removesuffix("Record").lower()
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a mapping, got {type(data).__name__}")
        _check_keys(path, data, fields(cls))  # type: ignore[arg-type]
        data = dict(data)
        for name, record in cls._nested.items():
            if data.get(name) is not None and not isinstance(data[name], record):
                data[name] = record.from_dict(data[name], f"{path}.{name}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]


@dataclass(kw_only=True)
class TimingRecord(_Record):
    """One timing session as a run (or the teacher) was timed in it (``loyalkit.study.timing``).

    ``teacher_latency_ms`` is the teacher's latency in the same session: the run's speed-up is
    that over the run's ``latency_ms``. ``load_before`` / ``load_after`` are the 1-minute load
    averages read just before and after the session (None where the platform has none),
    ``cpu_count`` the machine's CPUs, ``models`` how many models were timed round-robin
    (the teacher included); ``threads``, ``warmup``, ``repeats`` and ``batch_size`` are the
    timing settings; ``timed_at`` is an ISO-8601 UTC time.
    """

    timed_at: str | None = None
    teacher_latency_ms: float | None = None
    models: int | None = None
    threads: int | None = None
    warmup: int | None = None
    repeats: int | None = None
    batch_size: int | None = None
    load_before: float | None = None
    load_after: float | None = None
    cpu_count: int | None = None


@dataclass(kw_only=True)
class RunRecord(_Record):
    """One (method, seed) run: what it built and measured, or the traceback that stopped it."""

    method: str
    title: str | None = None
    seed: int
    status: str = "failed"
    error: str | None = None
    model_dir: str | None = None
    layers: int | None = None
    parameters: int | None = None
    size_on_disk_mb: float | None = None
    latency_ms: float | None = None
    speedup: float | None = None
    timing: TimingRecord | None = None  # None: not timed yet, or timed before schema 3
    train_seconds: float | None = None
    accuracy: float | None = None
    label_loyalty: float | None = None
    probability_loyalty: float | None = None
    flips: int | None = None
    kl_divergence: float | None = None
    attack: dict[str, Any] | None = None
    adversarial_loyalty: dict[str, Any] | None = None

    _nested: ClassVar[dict[str, type[_Record]]] = {"timing": TimingRecord}


@dataclass(kw_only=True)
class TeacherRecord(_Record):
    """The teacher as the study used it (fine-tuned or not) and its measurements."""

    model_dir: str
    model: str | None = None
    fine_tuned: bool | None = None
    train_seconds: float | None = None
    layers: int | None = None
    parameters: int | None = None
    size_on_disk_mb: float | None = None
    latency_ms: float | None = None
    timing: TimingRecord | None = None  # the latest session the teacher was timed in
    accuracy: float | None = None
    attack: dict[str, Any] | None = None

    _nested: ClassVar[dict[str, type[_Record]]] = {"timing": TimingRecord}


@dataclass(kw_only=True)
class StudyResults:
    """``results.json``: the environment, the config, the task, the teacher, every run, and the
    per-method summary over seeds (``loyalkit.study.report.summarize`` of the runs)."""

    loyalkit_version: str | None = None
    created: str | None = None
    environment: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    task: dict[str, Any] = field(default_factory=dict)
    teacher: TeacherRecord | None = None  # None: no teacher measured yet (the report omits its row)
    runs: list[RunRecord]
    summary: list[dict[str, Any]] = field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    @classmethod
    def from_dict(cls, data: Any) -> StudyResults:
        """Records from parsed ``results.json`` of any known version."""
        if not isinstance(data, Mapping):
            raise ValueError(f"results: expected a mapping, got {type(data).__name__}")
        data = dict(data)
        version = data.setdefault("schema_version", 1)
        if version not in READABLE_VERSIONS:
            raise ValueError(
                f"results: schema_version {version!r} is not one this loyalkit reads "
                f"({', '.join(map(str, READABLE_VERSIONS))}); a newer one needs a newer loyalkit"
            )
        # Versions 1 and 2 differ only by missing keys (schema_version; timing, read as None).
        data["schema_version"] = SCHEMA_VERSION
        _check_keys("results", data, fields(cls))
        if not isinstance(data.get("runs"), list):
            raise ValueError(f"results.runs: expected a list, got {data.get('runs')!r}")
        if data.get("teacher") is not None:
            data["teacher"] = TeacherRecord.from_dict(data["teacher"], "results.teacher")
        data["runs"] = [
            RunRecord.from_dict(run, f"results.runs[{index}]")
            for index, run in enumerate(data["runs"])
        ]
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data, ``schema_version`` first."""
        data = dataclasses.asdict(self)
        return {"schema_version": data.pop("schema_version"), **data}


def as_results(results: StudyResults | Mapping[str, Any]) -> StudyResults:
    """``results`` as records: parsed ``results.json`` is read with :meth:`StudyResults.from_dict`."""
    return results if isinstance(results, StudyResults) else StudyResults.from_dict(results)


def as_runs(runs: Sequence[RunRecord | Mapping[str, Any]]) -> list[RunRecord]:
    """``runs`` as records; a mapping needs a ``method`` name (the error names its index)."""
    records = []
    for index, run in enumerate(runs):
        if not isinstance(run, RunRecord):
            if not isinstance(run, Mapping) or not isinstance(run.get("method"), str):
                raise ValueError(
                    f"`runs[{index}]` must be a dict with a 'method' name, got {run!r}"
                )
            run = RunRecord.from_dict(run, f"runs[{index}]")
        records.append(run)
    return records


def read_results(path: str | Path) -> StudyResults:
    """The records in the ``results.json`` at ``path`` (a file or the study's folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results.json at {str(path)!r}")
    return StudyResults.from_dict(json.loads(path.read_text(encoding="utf-8")))
