"""int8 quantization-aware fine-tuning of the teacher (torchao fake quantization)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loyalkit.study.methods._registry import RunSpec, TrainedSettings, register
from loyalkit.study.methods._training import MethodContext, save, teacher_copy, train


@dataclass(frozen=True)
class Int8QATSettings(TrainedSettings):
    """int8 quantization-aware fine-tuning of the teacher (torchao fake quantization)."""

    epochs: float = 1.0
    learning_rate: float = 2e-5


@register(
    "int8-qat", Int8QATSettings, lambda s, _: "Q8-QAT", order=20, paper=Int8QATSettings(epochs=2.0)
)
def int8_qat(context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
    """Fine-tune the teacher with int8 fake quantization; the real int8 model at the end."""
    from loyalkit.callbacks import QuantizationAwareTrainingCallback

    assert isinstance(run.settings, Int8QATSettings)
    callbacks = [QuantizationAwareTrainingCallback()]
    trainer = train(context, teacher_copy(context), run.settings, seed, model_dir, callbacks)
    save(context, trainer.model, model_dir)
