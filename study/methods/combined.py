"""The combined strategy: logit KD + module replacement, then int8 PTQ of the successor."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loyalkit.study.methods._registry import RunSpec, register
from loyalkit.study.methods._training import MethodContext, train
from loyalkit.study.methods.theseus import PAPER_CURRICULUM, TheseusSettings, replacement
from loyalkit.study.schema import number


@dataclass(frozen=True)
class CombinedSettings(TheseusSettings):
    """The combined strategy: logit KD + module replacement, then int8 PTQ of the successor."""

    temperature: float = number(2.0, 0, open_low=True)
    alpha: float = number(0.5, 0, 1)


@register(
    "combined",
    CombinedSettings,
    lambda settings, _: f"KD+Theseus+Q8-L{settings.student_layers}",
    order=90,
    paper=CombinedSettings(**PAPER_CURRICULUM),
)
def combined(context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
    """Logit KD + module replacement, then int8 PTQ: the exported successor is int8."""
    from loyalkit.callbacks import (
        DistillationCallback,
        ModuleReplacementCallback,
        PostTrainingQuantizationCallback,
    )

    settings = run.settings
    assert isinstance(settings, CombinedSettings)
    model, schedule = replacement(context, run, seed)
    callbacks: list[Any] = [
        DistillationCallback(
            context.teacher,
            temperature=settings.temperature,
            alpha=settings.alpha,
            cache_teacher_logits=True,
        ),
        PostTrainingQuantizationCallback(backend="torchao"),
        # Listed after the quantization: the export is the int8 successor.
        ModuleReplacementCallback(schedule, seed=seed, export_dir=str(model_dir)),
    ]
    train(context, model, settings, seed, model_dir, callbacks)
    if context.is_main_process:
        context.tokenizer.save_pretrained(model_dir)
