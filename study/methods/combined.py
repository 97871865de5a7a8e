"""The combined strategy: logit KD + module replacement, then int8 (OpenVINO + NNCF) of the successor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loyalkit.study.methods import MethodContext, RunSpec, register, save_int8
from loyalkit.study.methods.kd_logit import kd_alpha, kd_temperature
from loyalkit.study.methods.theseus import TheseusSettings
from loyalkit.study.schema import integer


@register
@dataclass(frozen=True)
class CombinedSettings(TheseusSettings):
    """Logit KD + module replacement (BERT-of-Theseus); the exported successor is then written as
    int8 with :func:`~loyalkit.compression.export_int8` (calibrated on ``calibration_rows``
    training examples)."""

    name = "combined"
    order = 90

    temperature: float = kd_temperature(2.0)
    alpha: float = kd_alpha()
    calibration_rows: int = integer(512, 1)

    def callbacks(
        self, context: MethodContext, schedule: Any, seed: int, model_dir: Path
    ) -> list[Any]:
        from loyalkit.callbacks import DistillationCallback

        options = {"temperature": self.temperature, "alpha": self.alpha}
        return [
            DistillationCallback(context.teacher, **options, cache_teacher_logits=True),
            *super().callbacks(context, schedule, seed, model_dir),
        ]

    def build(self, context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
        from transformers import AutoModelForSequenceClassification

        super().build(context, run, seed, model_dir)
        if context.is_main_process:  # the float successor the callback exported, made int8
            successor = AutoModelForSequenceClassification.from_pretrained(model_dir)
            save_int8(context, successor, model_dir, self.calibration_rows)

    def title(self, variant: float | None) -> str:
        return f"KD+Theseus+Q8-L{self.student_layers}"
