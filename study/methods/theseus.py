"""BERT-of-Theseus (Xu et al. 2020): successors of fewer layers replace predecessor blocks."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loyalkit.study.methods._registry import RunSpec, StudentSettings, register
from loyalkit.study.methods._training import MethodContext, check_student_layers, steps, train
from loyalkit.study.methods.kd_logit import PAPER_STUDENT
from loyalkit.study.schema import number

#: The ``paper`` preset's curriculum (the paper's reference example).
PAPER_CURRICULUM: dict[str, Any] = {**PAPER_STUDENT, "slope": 0.0006, "intercept": 0.3}


@dataclass(frozen=True)
class TheseusSettings(StudentSettings):
    """BERT-of-Theseus: successors of ``student_layers`` layers replace predecessor blocks.

    Constant schedule (the paper's baseline): p = ``replacement_rate`` for the first
    ``replacing_share`` of the steps, then 1 (the successor alone is fine-tuned). With ``slope``
    set, the paper's linear curriculum p = min(1, slope * step + ``intercept``) instead.
    """

    replacement_rate: float = number(0.5, 0, 1)
    replacing_share: float = number(0.7, 0, 1)
    slope: float | None = number(None, 0, open_low=True, optional=True)
    intercept: float = number(0.3, 0, 1)
    # Only the successor layers train (embeddings and head frozen): in the quick preset's 120
    # steps, 1e-4 left MiniLM's successor at chance, 5e-4 reached 89% (the paper: 2e-5, 10k+ steps).
    learning_rate: float = 5e-4


def replacement(context: MethodContext, run: RunSpec, seed: int) -> tuple[Any, Any]:
    """A copy of the teacher prepared for module replacement, and its replacement schedule."""
    from loyalkit.compression import (
        ConstantReplacementSchedule,
        LinearReplacementSchedule,
        prepare_module_replacement,
    )

    settings = run.settings
    assert isinstance(settings, TheseusSettings)
    check_student_layers(context, run, settings.student_layers)
    model = copy.deepcopy(context.teacher).train()
    prepare_module_replacement(model, settings.student_layers, successor_init="bottom", seed=seed)
    schedule: Any
    if settings.slope is not None:
        schedule = LinearReplacementSchedule(slope=settings.slope, intercept=settings.intercept)
    else:
        schedule = ConstantReplacementSchedule(
            rate=settings.replacement_rate,
            replacing_steps=round(settings.replacing_share * steps(context, settings)),
        )
    return model, schedule


@register(
    "theseus",
    TheseusSettings,
    lambda settings, _: f"Theseus-L{settings.student_layers}",
    order=80,
    paper=TheseusSettings(**PAPER_CURRICULUM),
)
def theseus(context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
    """BERT-of-Theseus: cross-entropy only; the exported successor is the student."""
    from loyalkit.callbacks import ModuleReplacementCallback

    model, schedule = replacement(context, run, seed)
    export = ModuleReplacementCallback(schedule, seed=seed, export_dir=str(model_dir))
    train(context, model, run.settings, seed, model_dir, [export])
    if context.is_main_process:
        context.tokenizer.save_pretrained(model_dir)
