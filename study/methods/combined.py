"""The combined strategy: logit KD + module replacement, then int8 PTQ of the successor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loyalkit.study.methods import MethodContext, register
from loyalkit.study.methods.kd_logit import kd_alpha, kd_temperature
from loyalkit.study.methods.theseus import TheseusSettings


@register
@dataclass(frozen=True)
class CombinedSettings(TheseusSettings):
    """Logit KD + module replacement (BERT-of-Theseus), then int8 PTQ: the exported successor
    is int8."""

    name = "combined"
    order = 90

    temperature: float = kd_temperature(2.0)
    alpha: float = kd_alpha()

    def callbacks(
        self, context: MethodContext, schedule: Any, seed: int, model_dir: Path
    ) -> list[Any]:
        from loyalkit.callbacks import DistillationCallback, PostTrainingQuantizationCallback

        options = {"temperature": self.temperature, "alpha": self.alpha}
        return [
            DistillationCallback(context.teacher, **options, cache_teacher_logits=True),
            PostTrainingQuantizationCallback(backend="torchao"),
            # Listed after the quantization: the export is the int8 successor.
            *super().callbacks(context, schedule, seed, model_dir),
        ]

    def title(self, variant: float | None) -> str:
        return f"KD+Theseus+Q8-L{self.student_layers}"
