"""Feed-forward neuron pruning: remove a share of every layer's FFN neurons, then fine-tune with KD."""

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
from loyalkit.study.methods.kd_logit import kd_alpha, kd_callback, kd_temperature
from loyalkit.study.schema import checked_by, number


def _config(argument: str, value: Any) -> Any:
    """``FfnPruningConfig`` with ``argument=value``: where its check is declared."""
    from loyalkit.callbacks.ffn_pruning import FfnPruningConfig

    return FfnPruningConfig(fraction=0.5, **{argument: value})


@register
@dataclass(frozen=True)
class FfnPruningSettings(TrainedSettings):
    """Silence ``share`` of every layer's feed-forward neurons (scored before the first step),
    fine-tune with logit KD from the teacher, remove them: a smaller model of the same depth."""

    name = "ffn-pruning"
    order = 45
    paper = {"epochs": 2.0, "num_batches": 32}

    # Tighter than FfnPruningConfig's (0, 1), as for head pruning: over 95% measures nothing
    # but a broken model.
    share: float = number(0.5, 0, 0.95, open_low=True)
    importance: Literal["gradient", "magnitude"] = checked_by(
        "gradient", "a name", "FfnPruningConfig", partial(_config, "importance")
    )
    num_batches: int = checked_by(8, "an int", "FfnPruningConfig", partial(_config, "num_batches"))
    temperature: float = kd_temperature(2.0)
    alpha: float = kd_alpha()
    epochs: float = 1.0
    learning_rate: float = 3e-5

    def build(self, context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
        from loyalkit.callbacks import FfnPruningCallback

        pruning = FfnPruningCallback(
            fraction=self.share, importance=self.importance, num_batches=self.num_batches
        )
        kd = kd_callback(context, self)
        trainer = train(context, teacher_copy(context), self, seed, model_dir, [pruning, kd])
        save(context, trainer.model, model_dir)

    def title(self, variant: float | None) -> str:
        return f"FFN-{round(100 * self.share)}%+KD"
