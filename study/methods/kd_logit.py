"""Downstream logit KD (Hinton et al. 2015) to a student of the teacher's bottom layers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loyalkit.study.methods._registry import RunSpec, StudentSettings, register
from loyalkit.study.methods._training import (
    MethodContext,
    check_student_layers,
    save,
    train,
)
from loyalkit.study.schema import number

#: The ``paper`` preset's student training, shared by the KD and Theseus methods.
PAPER_STUDENT: dict[str, Any] = {"epochs": 4.0, "learning_rate": 5e-5, "batch_size": 32}


@dataclass(frozen=True)
class LogitKDSettings(StudentSettings):
    """Downstream KD to ``student_layers`` layers (bottom teacher layers as init): soft + hard."""

    temperature: float = number(2.0, 0, open_low=True)
    alpha: float = number(0.5, 0, 1)


def kd_student(context: MethodContext, run: RunSpec, layers: int) -> Any:
    """The teacher's bottom ``layers`` layers (with its embeddings and head) as the student."""
    from transformers import AutoModelForSequenceClassification

    check_student_layers(context, run, layers)
    depth: dict[str, Any] = {"num_hidden_layers": layers}
    layer_types = getattr(context.teacher.config, "layer_types", None)
    if isinstance(layer_types, list):  # ModernBERT, Qwen2: one type per layer, checked on loading
        depth["layer_types"] = layer_types[:layers]
    student = AutoModelForSequenceClassification.from_pretrained(context.teacher_dir, **depth)
    return student.train()


def distill(
    context: MethodContext, run: RunSpec, seed: int, model_dir: Path, **options: Any
) -> None:
    """Train ``run``'s student with a ``DistillationCallback(**options)`` and save it."""
    from loyalkit.callbacks import DistillationCallback

    settings = run.settings
    assert isinstance(settings, StudentSettings)
    student = kd_student(context, run, settings.student_layers)
    callback = DistillationCallback(context.teacher, **options)
    trainer = train(context, student, settings, seed, model_dir, [callback])
    save(context, trainer.model, model_dir)


@register(
    "kd-logit",
    LogitKDSettings,
    lambda settings, _: f"KD-L{settings.student_layers}",
    order=50,
    paper=LogitKDSettings(**PAPER_STUDENT),
)
def kd_logit(context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
    """Soft targets at ``temperature`` mixed with the hard labels by ``alpha``."""
    settings = run.settings
    assert isinstance(settings, LogitKDSettings)
    distill(
        context,
        run,
        seed,
        model_dir,
        temperature=settings.temperature,
        alpha=settings.alpha,
        cache_teacher_logits=True,
    )
