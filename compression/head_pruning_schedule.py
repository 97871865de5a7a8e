"""When attention heads are removed: the share of all original heads gone after a given step.

:class:`HeadPruningSchedule` follows :class:`~loyalkit.compression.schedules.Schedule`. It maps an
optimizer step (0: before the first step) to the share of all original heads removed by then, in
[0, 1) and non-decreasing (removed heads do not come back); between two scheduled steps the share
of the earlier one holds, before the first step nothing is removed. ``{0: 0.5}`` prunes once at
the start. Its ``to_dict()`` writes the steps as strings, as JSON (a callback's saved state)
keeps them, and the constructor reads them back.

Example:
    >>> schedule = HeadPruningSchedule({100: 0.25, 400: 0.5})
    >>> [schedule.value_at(t) for t in (0, 100, 399, 400, 1000)]
    [0.0, 0.25, 0.25, 0.5, 0.5]
    >>> HeadPruningSchedule(schedule.to_dict()["shares"]) == schedule
    True
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from loyalkit.compression.schedules import check_step
from loyalkit.compression.schedules import schedule_from_dict as _from_dict

__all__ = ["HeadPruningSchedule", "head_pruning_schedule_from_dict"]


@dataclass(frozen=True)
class HeadPruningSchedule:
    """Share of all original heads removed after each scheduled step (see the module docstring).

    Errors name ``schedule``, the argument of :class:`~loyalkit.callbacks.HeadPruningCallback`.
    """

    kind: ClassVar[str] = "head_shares"
    shares: Mapping[int, float]

    def __post_init__(self) -> None:
        if not isinstance(self.shares, Mapping) or not self.shares:
            raise ValueError(
                f"schedule: expected a non-empty mapping step -> share, got {self.shares!r}"
            )
        steps = []
        for step, share in self.shares.items():
            if isinstance(step, str) and step.isdigit():
                step = int(step)  # JSON (the callback state) turns the keys into strings
            if isinstance(step, bool) or not isinstance(step, int):
                raise ValueError(f"schedule: steps must be ints >= 0, got {step!r}")
            if step < 0:
                raise ValueError(f"schedule: steps must be >= 0, got {step}")
            if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share < 1:
                raise ValueError(
                    f"schedule: shares must be numbers in [0, 1), got {share!r} at step {step}"
                )
            steps.append((step, float(share)))
        steps.sort()
        for (step_a, share_a), (step_b, share_b) in itertools.pairwise(steps):
            if share_b < share_a:
                raise ValueError(
                    f"schedule: shares must not decrease (removed heads do not come back): "
                    f"{share_a} at step {step_a} then {share_b} at step {step_b}"
                )
        object.__setattr__(self, "shares", dict(steps))

    @property
    def steps(self) -> tuple[tuple[int, float], ...]:
        """``(step, share)`` pairs in step order."""
        return tuple(self.shares.items())

    def value_at(self, step: int) -> float:
        """The share of all original heads removed after ``step`` optimizer steps."""
        check_step(step, "step")
        return max((share for at, share in self.steps if at <= step), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "head_shares", "shares": {"<step>": share, ...}}``, JSON-ready."""
        return {"kind": self.kind, "shares": {str(step): share for step, share in self.steps}}


def head_pruning_schedule_from_dict(description: Mapping[str, Any]) -> HeadPruningSchedule:
    """The schedule ``HeadPruningSchedule.to_dict()`` described."""
    return _from_dict(description, {HeadPruningSchedule.kind: HeadPruningSchedule}, "schedule")
