"""Attention-head pruning: remove a share of all heads (scored before training), then fine-tune."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from loyalkit.study.methods._registry import RunSpec, TrainedSettings, register
from loyalkit.study.methods._training import MethodContext, save, teacher_copy, train
from loyalkit.study.schema import choice, integer, number


@dataclass(frozen=True)
class HeadPruningSettings(TrainedSettings):
    """Remove ``share`` of all attention heads (scored before training), then fine-tune."""

    share: float = number(0.5, 0, 0.95, open_low=True)
    importance: Literal["gradient", "magnitude"] = choice("gradient", "gradient", "magnitude")
    num_batches: int = integer(8, 1)
    epochs: float = 1.0
    learning_rate: float = 3e-5


@register(
    "head-pruning",
    HeadPruningSettings,
    lambda settings, _: f"HP-{round(100 * settings.share)}%",
    order=40,
    paper=HeadPruningSettings(epochs=2.0, num_batches=32),
)
def head_pruning(context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
    """Silence ``share`` of the heads before the first step, fine-tune, remove them at the end."""
    from loyalkit.callbacks import HeadPruningCallback

    settings = run.settings
    assert isinstance(settings, HeadPruningSettings)
    callback = HeadPruningCallback(
        schedule={0: settings.share},
        importance=settings.importance,
        num_batches=settings.num_batches,
    )
    trainer = train(context, teacher_copy(context), settings, seed, model_dir, [callback])
    save(context, trainer.model, model_dir)
