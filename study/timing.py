"""Timing sessions: each finished run's latency, paired with the teacher's, and the load seen.

A timing session times the teacher and the runs that need timing round-robin in one call of
:func:`loyalkit.study.measure.time_models` (warm-up, pinned threads, median of repeats). A run's
speed-up is the teacher's latency *in the run's own session* over the run's latency: both numbers
come from the same minutes, the same thread count and the same load, so a busy machine slows both
alike rather than only one side of the ratio. Dividing by a teacher latency stored from another
session would mix two machine states in one number, so every run keeps the teacher latency it was
divided by (``TimingRecord.teacher_latency_ms``). Once stored, a speed-up is not measured again
on resume; ``loyalkit study run --retime`` re-times every finished run in one new session.

The 1-minute load average (``os.getloadavg``) is read before and after the session, with the CPU
count (``os.cpu_count``: the load average counts the whole machine). A figure counts as timed
**under load** when either reading exceeds :data:`LOAD_PER_CPU_LIMIT` times the CPU count: the
load average counts runnable threads, the timing's own included, so above one per CPU some thread,
possibly a timed one, waited for a core. Equivalently, the other threads' demand exceeded the cores
the timing left free. The 1-minute average lags (it also remembers the work just before the
session), so the rule flags a busy minute, not a busy millisecond; a quiet reading does not prove
that nothing ran beside the timing.

Example:
    >>> from loyalkit.study.records import TimingRecord
    >>> quiet = TimingRecord(load_before=0.4, load_after=1.1, cpu_count=2)
    >>> busy = TimingRecord(load_before=1.5, load_after=3.2, cpu_count=2)
    >>> under_load(quiet), under_load(busy), under_load(TimingRecord())
    (False, True, False)
    >>> describe_load(busy)
    '1-min load average 1.50 before, 3.20 after timing, 2 CPUs (limit 2.0)'
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from loyalkit.study.records import TimingRecord

if TYPE_CHECKING:
    from loyalkit.study.config import MeasureSettings

__all__ = [
    "LOAD_PER_CPU_LIMIT",
    "TEACHER",
    "describe_load",
    "load_average",
    "load_limit",
    "time_session",
    "under_load",
]

#: A timing is flagged as under load when the 1-minute load average before or after it exceeds
#: this many runnable threads per CPU (1.0: more runnable threads than cores).
LOAD_PER_CPU_LIMIT = 1.0

#: The key of the teacher in the models of :func:`time_session`.
TEACHER = "teacher"


def load_average() -> float | None:
    """The 1-minute load average, rounded to 2 decimals; None where the platform has none."""
    getloadavg = getattr(os, "getloadavg", None)  # absent on Windows
    if getloadavg is None:
        return None
    try:
        return round(float(getloadavg()[0]), 2)
    except OSError:
        return None


def load_limit(cpu_count: int | None) -> float | None:
    """The load average above which a timing on ``cpu_count`` CPUs counts as under load."""
    return None if not cpu_count else LOAD_PER_CPU_LIMIT * cpu_count


def under_load(timing: TimingRecord | Mapping[str, Any] | None) -> bool:
    """Whether ``timing`` saw a 1-minute load average above :func:`load_limit` before or after.

    False when the load or the CPU count was not recorded (older results, or a platform without
    ``os.getloadavg``): :func:`describe_load` then says so.
    """
    timing = _record(timing)
    limit = load_limit(timing.cpu_count) if timing is not None else None
    if timing is None or limit is None:
        return False
    readings = [x for x in (timing.load_before, timing.load_after) if x is not None]
    return any(x > limit for x in readings)


def describe_load(timing: TimingRecord | Mapping[str, Any] | None) -> str:
    """The load a timing saw, in words (for the report's footnotes and the model card)."""
    timing = _record(timing)
    if timing is None or (timing.load_before is None and timing.load_after is None):
        return "load average not recorded"

    def reading(value: float | None) -> str:
        return "—" if value is None else f"{value:.2f}"

    limit = load_limit(timing.cpu_count)
    cpus = f"{timing.cpu_count} CPUs (limit {limit:.1f})" if limit is not None else "CPUs unknown"
    return (
        f"1-min load average {reading(timing.load_before)} before, "
        f"{reading(timing.load_after)} after timing, {cpus}"
    )


def time_session(
    models: Mapping[str, Any], batch: Mapping[str, Any], measure: MeasureSettings
) -> tuple[dict[str, float], TimingRecord]:
    """Time ``models`` (the teacher under :data:`TEACHER` among them) round-robin in one call.

    Returns each model's median latency in ms and the session's :class:`TimingRecord` (its
    ``teacher_latency_ms`` is the teacher's latency of this session).
    """
    # Looked up at call time, so a test can count the timing calls.
    from loyalkit.study import measure as study_measure

    if TEACHER not in models:
        raise ValueError(f"`models` must include the teacher under {TEACHER!r}, got {list(models)}")
    before = load_average()
    latency = study_measure.time_models(
        models,
        batch,
        threads=measure.latency_threads,
        warmup=measure.latency_warmup,
        repeats=measure.latency_repeats,
    )
    after = load_average()
    timing = TimingRecord(
        timed_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        teacher_latency_ms=latency[TEACHER],
        models=len(models),
        threads=measure.latency_threads,
        warmup=measure.latency_warmup,
        repeats=measure.latency_repeats,
        batch_size=_batch_size(batch),
        load_before=before,
        load_after=after,
        cpu_count=os.cpu_count(),
    )
    return latency, timing


def _batch_size(batch: Mapping[str, Any]) -> int | None:
    first = next(iter(batch.values()), None)
    shape = getattr(first, "shape", None)
    return int(shape[0]) if shape else None


def _record(timing: TimingRecord | Mapping[str, Any] | None) -> TimingRecord | None:
    if timing is None or isinstance(timing, TimingRecord):
        return timing
    return TimingRecord.from_dict(timing, "timing")
