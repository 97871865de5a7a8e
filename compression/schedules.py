"""The one protocol every step -> value schedule of ``compression`` follows.

Magnitude pruning (:mod:`~loyalkit.compression.sparsity_schedules`: the sparsity), head pruning
(:class:`~loyalkit.compression.head_pruning_schedule.HeadPruningSchedule`: the share of heads
removed) and
module replacement (:mod:`~loyalkit.compression.module_replacement`: the replacement rate) each
ask "which value after ``step`` optimizer steps?". Their schedules are frozen dataclasses with a
``kind``, ``value_at(step)`` and ``to_dict()`` (JSON-ready, ``kind`` plus the fields), rebuilt by
:func:`schedule_from_dict` over the family's kinds; a callback (or a resumed run's
``ExportableState``) needs nothing else. ``step`` counts completed optimizer steps
(``TrainerState.global_step``), never the Trainer itself.

Example:
    >>> from loyalkit.compression import (CubicSchedule, HeadPruningSchedule,
    ...                                   LinearReplacementSchedule)
    >>> schedules = [CubicSchedule(0.8, start_step=0, end_step=100, frequency=25),
    ...              HeadPruningSchedule({0: 0.25, 50: 0.5}),
    ...              LinearReplacementSchedule(slope=0.01, intercept=0.3)]
    >>> all(isinstance(s, Schedule) for s in schedules)
    True
    >>> [round(s.value_at(50), 4) for s in schedules]
    [0.7, 0.5, 0.8]
    >>> schedules[1].to_dict()
    {'kind': 'head_shares', 'shares': {'0': 0.25, '50': 0.5}}
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

__all__ = ["Schedule", "check_step", "schedule_from_dict"]

S = TypeVar("S")


@runtime_checkable
class Schedule(Protocol):
    """A step -> value schedule (see the module docstring)."""

    kind: ClassVar[str]

    def value_at(self, step: int) -> float:
        """The value after ``step`` completed optimizer steps (``step >= 0``)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": ..., **fields}``, JSON-ready; :func:`schedule_from_dict` rebuilds it."""
        ...


def check_step(value: Any, name: str = "step", minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum``; errors name the argument ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(value)


def schedule_from_dict(
    description: Mapping[str, Any],
    kinds: Mapping[str, Callable[..., S]],
    name: str = "schedule",
) -> S:
    """The schedule of ``kinds[description["kind"]]`` that ``to_dict()`` described.

    ``name`` is the argument the errors name.

    Example:
        >>> from loyalkit.compression import OneShotSchedule
        >>> schedule_from_dict({"kind": "one_shot", "target_sparsity": 0.5},
        ...                    {"one_shot": OneShotSchedule})
        OneShotSchedule(target_sparsity=0.5, step=0)
    """
    if not isinstance(description, Mapping):
        raise TypeError(f"{name} must be a mapping, got {type(description).__name__}")
    fields = dict(description)
    kind = fields.pop("kind", None)
    if kind not in kinds:
        raise ValueError(f"{name}['kind'] must be one of {sorted(kinds)}, got {kind!r}")
    return kinds[kind](**fields)
