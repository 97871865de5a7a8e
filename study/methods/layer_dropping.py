"""Layer dropping: keep ``student_layers`` of the teacher's layers (alternate ones by default),
then fine-tune with logit KD."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from loyalkit.study.methods import (
    MethodContext,
    RunSpec,
    StudentSettings,
    check_student_layers,
    register,
    save,
    teacher_copy,
    teacher_layers,
    train,
)
from loyalkit.study.methods.kd_logit import PAPER_STUDENT, kd_alpha, kd_callback, kd_temperature
from loyalkit.study.schema import checked_by


def _config(strategy: Any) -> Any:
    """``LayerDroppingConfig(strategy=...)``: where the strategies are declared."""
    from loyalkit.callbacks.layer_dropping import LayerDroppingConfig

    return LayerDroppingConfig(count=1, strategy=strategy)


@register
@dataclass(frozen=True)
class LayerDroppingSettings(StudentSettings):
    """Drop layers of a copy of the teacher down to ``student_layers`` (``strategy``: every
    other layer from the top, or the top ones, Sajjad et al. 2023) and fine-tune with logit KD.
    With ``strategy: top`` the student starts as ``kd-logit``'s does (the bottom layers)."""

    name = "layer-dropping"
    order = 75
    paper = PAPER_STUDENT

    strategy: Literal["top", "alternate"] = checked_by(
        "alternate", "a name", "LayerDroppingConfig", _config
    )
    temperature: float = kd_temperature(2.0)
    alpha: float = kd_alpha()
    epochs: float = 2.0

    def build(self, context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
        from loyalkit.callbacks import LayerDroppingCallback

        check_student_layers(context, run, self.student_layers)
        dropping = LayerDroppingCallback(
            count=teacher_layers(context) - self.student_layers, strategy=self.strategy
        )
        kd = kd_callback(context, self)
        trainer = train(context, teacher_copy(context), self, seed, model_dir, [dropping, kd])
        save(context, trainer.model, model_dir)

    def title(self, variant: float | None) -> str:
        prefix = "LD-alt" if self.strategy == "alternate" else "LD-top"
        return f"{prefix}-L{self.student_layers}+KD"
