"""Attention-head pruning: remove a share of all heads (scored before training), then fine-tune."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

from loyalkit.study.methods import (
    MethodContext,
    RunSpec,
    TrainedSettings,
    register,
    save,
    teacher_copy,
    train,
)
from loyalkit.study.schema import checked_by, number


def _config(argument: str, value: Any) -> Any:
    """``HeadPruningConfig`` with ``argument=value``: where its check is declared."""
    from loyalkit.callbacks.head_pruning import HeadPruningConfig

    return HeadPruningConfig(schedule={0: 0.5}, **{argument: value})


@register
@dataclass(frozen=True)
class HeadPruningSettings(TrainedSettings):
    """Silence ``share`` of all heads (scored before the first step), fine-tune, remove them."""

    name = "head-pruning"
    order = 40
    paper = {"epochs": 2.0, "num_batches": 32}

    # Tighter than HeadPruningSchedule's [0, 1): 0 would prune nothing, and a study run that
    # removes over 95% of the heads measures nothing but a broken model.
    share: float = number(0.5, 0, 0.95, open_low=True)
    importance: Literal["gradient", "magnitude"] = checked_by(
        "gradient", "a name", "HeadPruningConfig", partial(_config, "importance")
    )
    num_batches: int = checked_by(8, "an int", "HeadPruningConfig", partial(_config, "num_batches"))
    epochs: float = 1.0
    learning_rate: float = 3e-5

    def build(self, context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
        from loyalkit.callbacks import HeadPruningCallback

        callback = HeadPruningCallback(
            schedule={0: self.share}, importance=self.importance, num_batches=self.num_batches
        )
        trainer = train(context, teacher_copy(context), self, seed, model_dir, [callback])
        save(context, trainer.model, model_dir)

    def title(self, variant: float | None) -> str:
        return f"HP-{round(100 * self.share)}%"
