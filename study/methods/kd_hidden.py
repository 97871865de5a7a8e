"""Logit KD plus hidden-state MSE (PKD, Sun et al. 2019): student layer i learns teacher layer i*N/L."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loyalkit.study.methods import MethodContext, RunSpec, register, teacher_layers
from loyalkit.study.methods.kd_logit import LogitKDSettings, distill, kd_setting


@register
@dataclass(frozen=True)
class HiddenKDSettings(LogitKDSettings):
    """Logit KD plus hidden-state MSE (PKD): student layer i learns teacher layer i*N/L (no
    logit cache: the hidden-state loss needs the teacher at every step)."""

    name = "kd-hidden"
    order = 70

    hidden_weight: float = kd_setting("hidden_weight", 1.0)
    hidden_normalize: bool = kd_setting("hidden_normalize", True, "true or false")

    def build(self, context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
        ratio = teacher_layers(context) / self.student_layers
        distill(
            context,
            run,
            seed,
            model_dir,
            temperature=self.temperature,
            alpha=self.alpha,
            hidden_layer_map={i: round(i * ratio) for i in range(1, self.student_layers + 1)},
            hidden_weight=self.hidden_weight,
            hidden_normalize=self.hidden_normalize,
        )

    def title(self, variant: float | None) -> str:
        return f"KD-hidden-L{self.student_layers}"
