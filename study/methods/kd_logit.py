"""Downstream logit KD (Hinton et al. 2015) to a student of the teacher's bottom layers."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from loyalkit.study.methods import (
    MethodContext,
    RunSpec,
    StudentSettings,
    check_student_layers,
    register,
    save,
    train,
)
from loyalkit.study.schema import checked_by


def _distillation_config(argument: str, value: Any) -> Any:
    """``DistillationConfig(argument=value)``: where the KD settings' bounds are declared."""
    from loyalkit.compression.distillation import DistillationConfig

    return DistillationConfig(**{argument: value})


def kd_setting(argument: str, default: Any, kind: str = "a number") -> Any:
    """A KD setting that ``DistillationConfig`` validates as its ``argument``, for every KD method."""
    return checked_by(default, kind, "DistillationConfig", partial(_distillation_config, argument))


def kd_temperature(default: float) -> Any:
    """The soft targets' temperature (``DistillationConfig.temperature``: > 0)."""
    return kd_setting("temperature", default)


def kd_alpha(default: float = 0.5) -> Any:
    """The weight of the soft targets against the hard labels (``DistillationConfig.alpha``)."""
    return kd_setting("alpha", default)


def kd_callback(context: MethodContext, settings: Any) -> Any:
    """Logit KD from the context's teacher at ``settings.temperature`` and ``settings.alpha``,
    the teacher's logits cached per example (the methods that fine-tune a pruned teacher)."""
    from loyalkit.callbacks import DistillationCallback

    return DistillationCallback(
        context.teacher,
        temperature=settings.temperature,
        alpha=settings.alpha,
        cache_teacher_logits=True,
    )


#: The ``paper`` preset's student training, shared by the KD and Theseus methods.
PAPER_STUDENT: dict[str, Any] = {"epochs": 4.0, "learning_rate": 5e-5, "batch_size": 32}


def distill(
    context: MethodContext, run: RunSpec, seed: int, model_dir: Path, **options: Any
) -> None:
    """Train ``run``'s student (the teacher's bottom ``student_layers`` layers, with its
    embeddings and head) with a ``DistillationCallback(**options)`` and save it."""
    from transformers import AutoModelForSequenceClassification

    from loyalkit.callbacks import DistillationCallback

    settings = run.settings
    assert isinstance(settings, StudentSettings)
    check_student_layers(context, run, settings.student_layers)
    depth: dict[str, Any] = {"num_hidden_layers": settings.student_layers}
    layer_types = getattr(context.teacher.config, "layer_types", None)
    if isinstance(layer_types, list):  # ModernBERT, Qwen2: one type per layer, checked on loading
        depth["layer_types"] = layer_types[: settings.student_layers]
    student = AutoModelForSequenceClassification.from_pretrained(context.teacher_dir, **depth)
    callback = DistillationCallback(context.teacher, **options)
    trainer = train(context, student.train(), settings, seed, model_dir, [callback])
    save(context, trainer.model, model_dir)


@register
@dataclass(frozen=True)
class LogitKDSettings(StudentSettings):
    """Downstream KD to ``student_layers`` layers (bottom teacher layers as init): soft targets
    at ``temperature`` mixed with the hard labels by ``alpha``."""

    name = "kd-logit"
    order = 50
    paper = PAPER_STUDENT

    temperature: float = kd_temperature(2.0)
    alpha: float = kd_alpha()

    def build(self, context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
        options = {"temperature": self.temperature, "alpha": self.alpha}
        distill(context, run, seed, model_dir, **options, cache_teacher_logits=True)

    def title(self, variant: float | None) -> str:
        return f"KD-L{self.student_layers}"
