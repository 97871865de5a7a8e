"""Sparsity schedules: the share of weights to prune after a given number of optimizer steps.

Three schedules, each a frozen dataclass following :class:`~loyalkit.compression.schedules.Schedule`
(``value_at(step)``, also spelled ``sparsity_at(step)``, and ``to_dict()``):

- :class:`OneShotSchedule`: dense before ``step``, the full target from ``step`` on.
- :class:`LinearSchedule`: from ``initial_sparsity`` at ``start_step`` to ``target_sparsity`` at
  ``end_step`` in a straight line.
- :class:`CubicSchedule`: the gradual schedule of Zhu & Gupta (2017, "To prune, or not to prune"),
  ``s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3`` with ``t0 = start_step`` and
  ``n * dt = end_step - start_step``: fast pruning early, slow near the end.

``step`` counts completed optimizer steps (``TrainerState.global_step``). Before ``start_step`` the
model is dense (sparsity 0); from ``end_step`` on it is at the target. Linear and cubic schedules
change only every ``frequency`` steps: ``t`` is rounded down to ``start_step + k * frequency``, so
when ``end_step - start_step`` is not a multiple of ``frequency`` the last change is the jump to
the target at ``end_step``.

``torch.ao.pruning.scheduler.CubicSL`` computes the same cubic curve but only drives a
``torch.ao.pruning`` sparsifier (parametrizations on the model) and does not hold the value between
pruning steps; the tests check these values against its ``sparsity_compute_fn``.

Example:
    >>> from loyalkit.compression import CubicSchedule
    >>> schedule = CubicSchedule(target_sparsity=0.8, start_step=0, end_step=100, frequency=25)
    >>> [round(schedule.sparsity_at(t), 4) for t in (0, 24, 25, 50, 75, 100, 500)]
    [0.0, 0.0, 0.4625, 0.7, 0.7875, 0.8, 0.8]
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from loyalkit.compression.schedules import check_step as _check_step
from loyalkit.compression.schedules import schedule_from_dict as _from_dict

__all__ = [
    "CubicSchedule",
    "LinearSchedule",
    "OneShotSchedule",
    "SparsitySchedule",
    "schedule_from_dict",
    "schedule_to_dict",
]


def check_sparsity(value: Any, name: str, upper: float = 1.0) -> float:
    """``value`` as a float in [0, 1) and at most ``upper``; errors name the argument ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1), got {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value!r}")
    if float(value) > upper:
        raise ValueError(f"{name} must not exceed target_sparsity ({upper}), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class OneShotSchedule:
    """Dense until ``step``, then ``target_sparsity`` (``step=0``: prune before training starts).

    Example:
        >>> schedule = OneShotSchedule(target_sparsity=0.5, step=10)
        >>> schedule.sparsity_at(9), schedule.sparsity_at(10)
        (0.0, 0.5)
    """

    kind: ClassVar[str] = "one_shot"
    target_sparsity: float
    step: int = 0

    def __post_init__(self) -> None:
        check_sparsity(self.target_sparsity, "target_sparsity")
        _check_step(self.step, "step")

    def value_at(self, step: int) -> float:
        """The sparsity the model should have after ``step`` optimizer steps."""
        _check_step(step, "step")
        return float(self.target_sparsity) if step >= self.step else 0.0

    def sparsity_at(self, step: int) -> float:
        """:meth:`value_at`, by the name of what it schedules."""
        return self.value_at(step)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": "one_shot", **fields}`` (see :func:`schedule_to_dict`)."""
        return schedule_to_dict(self)


@dataclass(frozen=True)
class _GradualSchedule:
    """What the linear and cubic schedules share: fields, checks and the pruning grid.

    Subclasses give the curve, :meth:`_interpolate`, from ``initial`` (progress 0) to ``target``
    (progress 1).
    """

    kind: ClassVar[str]
    target_sparsity: float
    start_step: int
    end_step: int
    frequency: int = 1
    initial_sparsity: float = 0.0

    def __post_init__(self) -> None:
        target = check_sparsity(self.target_sparsity, "target_sparsity")
        check_sparsity(self.initial_sparsity, "initial_sparsity", upper=target)
        _check_step(self.start_step, "start_step")
        _check_step(self.end_step, "end_step")
        _check_step(self.frequency, "frequency", minimum=1)
        if self.end_step <= self.start_step:
            raise ValueError(
                f"end_step must be greater than start_step, got end_step={self.end_step} "
                f"and start_step={self.start_step}"
            )

    def sparsity_at(self, step: int) -> float:
        """:meth:`value_at`, by the name of what it schedules."""
        return self.value_at(step)

    def to_dict(self) -> dict[str, Any]:
        """``{"kind": ..., **fields}`` (see :func:`schedule_to_dict`)."""
        return schedule_to_dict(self)  # type: ignore[arg-type]

    def value_at(self, step: int) -> float:
        """The sparsity the model should have after ``step`` optimizer steps."""
        _check_step(step, "step")
        if step < self.start_step:
            return 0.0
        if step >= self.end_step:
            progress = 1.0
        else:  # (t - t0) / (n * dt) with t rounded down to the pruning grid
            on_grid = self.start_step + (step - self.start_step) // self.frequency * self.frequency
            progress = (on_grid - self.start_step) / (self.end_step - self.start_step)
        return self._interpolate(
            float(self.initial_sparsity), float(self.target_sparsity), progress
        )

    def _interpolate(self, initial: float, target: float, progress: float) -> float:
        raise NotImplementedError


@dataclass(frozen=True)
class LinearSchedule(_GradualSchedule):
    """From ``initial_sparsity`` at ``start_step`` to ``target_sparsity`` at ``end_step``, linearly.

    Example:
        >>> schedule = LinearSchedule(target_sparsity=0.6, start_step=10, end_step=40, frequency=10)
        >>> [round(schedule.sparsity_at(t), 4) for t in (0, 10, 19, 20, 30, 40)]
        [0.0, 0.0, 0.0, 0.2, 0.4, 0.6]
    """

    kind: ClassVar[str] = "linear"

    def _interpolate(self, initial: float, target: float, progress: float) -> float:
        return initial + (target - initial) * progress


@dataclass(frozen=True)
class CubicSchedule(_GradualSchedule):
    """Zhu & Gupta's gradual schedule: ``s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt)) ** 3``.

    ``t0 = start_step``, ``n * dt = end_step - start_step``, ``dt = frequency``.

    Example:
        >>> schedule = CubicSchedule(target_sparsity=0.9, start_step=0, end_step=10, frequency=1)
        >>> round(schedule.sparsity_at(5), 4)
        0.7875
    """

    kind: ClassVar[str] = "cubic"

    def _interpolate(self, initial: float, target: float, progress: float) -> float:
        return target + (initial - target) * (1.0 - progress) ** 3


SparsitySchedule = OneShotSchedule | LinearSchedule | CubicSchedule
_KINDS: dict[str, type[OneShotSchedule] | type[LinearSchedule] | type[CubicSchedule]] = {
    cls.kind: cls for cls in (OneShotSchedule, LinearSchedule, CubicSchedule)
}


def schedule_to_dict(schedule: SparsitySchedule) -> dict[str, Any]:
    """A JSON-ready description of ``schedule`` (``kind`` plus its fields).

    Example:
        >>> schedule_to_dict(OneShotSchedule(target_sparsity=0.5))
        {'kind': 'one_shot', 'target_sparsity': 0.5, 'step': 0}
    """
    if not isinstance(schedule, tuple(_KINDS.values())):
        raise TypeError(
            "schedule must be a OneShotSchedule, LinearSchedule or CubicSchedule, "
            f"got {type(schedule).__name__}"
        )
    return {"kind": schedule.kind, **dataclasses.asdict(schedule)}


def schedule_from_dict(description: Mapping[str, Any]) -> SparsitySchedule:
    """The schedule that :func:`schedule_to_dict` described.

    Example:
        >>> schedule_from_dict({"kind": "linear", "target_sparsity": 0.5, "start_step": 0,
        ...                     "end_step": 10})
        LinearSchedule(target_sparsity=0.5, start_step=0, end_step=10, frequency=1, initial_sparsity=0.0)
    """
    return _from_dict(description, _KINDS, "schedule")
