"""Attention-head pruning: remove a share of all heads (scored before training), then fine-tune."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from loyalkit.study.methods import (
    MethodContext,
    RunSpec,
    TrainedSettings,
    register,
    save,
    teacher_copy,
    train,
)
from loyalkit.study.schema import choice, integer, number


@register
@dataclass(frozen=True)
class HeadPruningSettings(TrainedSettings):
    """Silence ``share`` of all heads (scored before the first step), fine-tune, remove them."""

    name = "head-pruning"
    order = 40
    paper = {"epochs": 2.0, "num_batches": 32}

    share: float = number(0.5, 0, 0.95, open_low=True)
    importance: Literal["gradient", "magnitude"] = choice("gradient", "gradient", "magnitude")
    num_batches: int = integer(8, 1)
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
