"""int8 quantization-aware fine-tuning of the teacher (torchao fake quantization)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loyalkit.study.methods import (
    MethodContext,
    RunSpec,
    TrainedSettings,
    register,
    save,
    teacher_copy,
    train,
)


@register
@dataclass(frozen=True)
class Int8QATSettings(TrainedSettings):
    """Fine-tune the teacher with int8 fake quantization; the real int8 model at the end."""

    name = "int8-qat"
    order = 20
    paper = {"epochs": 2.0}

    epochs: float = 1.0
    learning_rate: float = 2e-5

    def build(self, context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
        from loyalkit.callbacks import QuantizationAwareTrainingCallback

        callbacks = [QuantizationAwareTrainingCallback()]
        trainer = train(context, teacher_copy(context), self, seed, model_dir, callbacks)
        save(context, trainer.model, model_dir)

    def title(self, variant: float | None) -> str:
        return "Q8-QAT"
