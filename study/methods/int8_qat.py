"""int8 quantization-aware fine-tuning of the teacher (torchao fake quantization), exported as
loyalkit's deployment int8 (OpenVINO + NNCF)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loyalkit.study.methods import (
    MethodContext,
    RunSpec,
    TrainedSettings,
    register,
    save_int8,
    teacher_copy,
    train,
)
from loyalkit.study.schema import integer


@register
@dataclass(frozen=True)
class Int8QATSettings(TrainedSettings):
    """Fine-tune the teacher with int8 fake quantization (int8 per-channel weights, int8 per-token
    activations), then export the trained weights as int8 with
    :func:`~loyalkit.compression.export_int8`."""

    name = "int8-qat"
    order = 20
    paper = {"epochs": 2.0}

    epochs: float = 1.0
    learning_rate: float = 2e-5
    calibration_rows: int = integer(512, 1)

    def build(self, context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
        from loyalkit.callbacks import QuantizationAwareTrainingCallback
        from loyalkit.compression import strip_fake_quantization

        callbacks = [QuantizationAwareTrainingCallback(convert_at_end=False)]
        trainer = train(context, teacher_copy(context), self, seed, model_dir, callbacks)
        model = trainer.model
        strip_fake_quantization(model)
        save_int8(context, model, model_dir, self.calibration_rows)

    def title(self, variant: float | None) -> str:
        return "Q8-QAT"
