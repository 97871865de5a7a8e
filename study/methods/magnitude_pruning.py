"""Magnitude pruning of the encoder's Linear weights while fine-tuning, one run per sparsity."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from loyalkit.study.methods import (
    MethodContext,
    MethodSettings,
    RunSpec,
    TrainedSettings,
    register,
    save,
    steps,
    teacher_copy,
    train,
)
from loyalkit.study.schema import check_number, checked_by, fail, number, setting


def _check_scope(value: Any) -> Any:
    from loyalkit.compression.magnitude_pruning import check_scope

    return check_scope(value)


def _check_sparsities(path: str, value: Any) -> None:
    # Tighter than the schedules' [0, 1): 0 prunes nothing, and a run id is the rounded percent.
    if not isinstance(value, tuple) or not value:
        raise fail(path, f"expected a list of shares, got {value!r}")
    for share in value:
        check_number(path, share, 0, 0.99, open_low=True)
    ids = [round(100 * s) for s in value]
    if len(set(ids)) != len(ids):
        raise fail(path, f"two sparsities round to the same percent: {ids}")


@register
@dataclass(frozen=True)
class MagnitudePruningSettings(TrainedSettings):
    """Magnitude pruning of the encoder's Linear weights while fine-tuning, one run per sparsity.

    The cubic schedule of Zhu & Gupta ramps from 0 to each sparsity over the first
    ``ramp_share`` of the training steps; the rest fine-tunes at the target.
    """

    name = "magnitude-pruning"
    order = 30
    paper = {"sparsities": (0.5, 0.7, 0.9), "epochs": 3.0}

    sparsities: tuple[float, ...] = setting((0.5, 0.8), _check_sparsities)
    scope: Literal["global", "layer"] = checked_by(
        "global", "a name", "compression.magnitude_pruning", _check_scope
    )
    ramp_share: float = number(0.6, 0, 1, open_low=True)
    learning_rate: float = 3e-5

    def variants(self) -> dict[str, float | None]:
        return {f"-{round(100 * s)}": s for s in self.sparsities}

    def restricted(self, suffixes: Iterable[str]) -> MethodSettings | None:
        kept = tuple(s for s in self.sparsities if f"-{round(100 * s)}" in set(suffixes))
        return dataclasses.replace(self, sparsities=kept) if kept else None

    def build(self, context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
        from loyalkit.callbacks import MagnitudePruningCallback
        from loyalkit.compression import CubicSchedule

        assert run.sparsity is not None
        total = steps(context, self)
        end = max(1, round(self.ramp_share * total))
        schedule = CubicSchedule(
            target_sparsity=run.sparsity, start_step=0, end_step=end, frequency=max(1, end // 10)
        )
        callback = MagnitudePruningCallback(schedule, scope=self.scope)
        model = teacher_copy(context)
        trainer = train(context, model, self, seed, model_dir, [callback], max_steps=total)
        save(context, trainer.model, model_dir)

    def title(self, variant: float | None) -> str:
        return f"MP-{round(100 * (variant or 0))}%"
