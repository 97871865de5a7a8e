"""BERT-of-Theseus (Xu et al. 2020): successors of fewer layers replace predecessor blocks."""

from __future__ import annotations

import copy
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
    steps,
    train,
)
from loyalkit.study.methods.kd_logit import PAPER_STUDENT
from loyalkit.study.schema import checked_by, number


def _schedule(kind: str, argument: str, value: Any) -> Any:
    """A replacement schedule of ``kind`` with ``argument=value``: where its bound is declared."""
    from loyalkit.compression.module_replacement import (
        ConstantReplacementSchedule,
        LinearReplacementSchedule,
    )

    schedule = ConstantReplacementSchedule if kind == "constant" else LinearReplacementSchedule
    return schedule(**{argument: value})


@register
@dataclass(frozen=True)
class TheseusSettings(StudentSettings):
    """BERT-of-Theseus: successors of ``student_layers`` layers replace predecessor blocks;
    cross-entropy only, the exported successor is the student.

    Constant schedule (the paper's baseline): p = ``replacement_rate`` for the first
    ``replacing_share`` of the steps, then 1 (the successor alone is fine-tuned). With ``slope``
    set, the paper's linear curriculum p = min(1, slope * step + ``intercept``) instead.
    """

    name = "theseus"
    order = 80
    paper = {**PAPER_STUDENT, "slope": 0.0006, "intercept": 0.3}  # the paper's reference example

    replacement_rate: float = checked_by(
        0.5, "a number", "ConstantReplacementSchedule", partial(_schedule, "constant", "rate")
    )
    replacing_share: float = number(0.7, 0, 1)  # of the steps: the schedule takes a step count
    # > 0, tighter than LinearReplacementSchedule's >= 0: slope 0 keeps p = intercept for ever,
    # which the study spells as the constant schedule (slope unset, replacing_share 1).
    slope: float | None = number(None, 0, open_low=True, optional=True)
    intercept: float = checked_by(
        0.3, "a number", "LinearReplacementSchedule", partial(_schedule, "linear", "intercept")
    )
    # Only the successor layers train (embeddings and head frozen): in the quick preset's 120
    # steps, 1e-4 left MiniLM's successor at chance, 5e-4 reached 89% (the paper: 2e-5, 10k+ steps).
    learning_rate: float = 5e-4

    def replacement(self, context: MethodContext, run: RunSpec, seed: int) -> tuple[Any, Any]:
        """A copy of the teacher prepared for module replacement, and its replacement schedule."""
        from loyalkit.compression import (
            ConstantReplacementSchedule,
            LinearReplacementSchedule,
            prepare_module_replacement,
        )

        check_student_layers(context, run, self.student_layers)
        model = copy.deepcopy(context.teacher).train()
        prepare_module_replacement(model, self.student_layers, successor_init="bottom", seed=seed)
        schedule: Any
        if self.slope is not None:
            schedule = LinearReplacementSchedule(slope=self.slope, intercept=self.intercept)
        else:
            replacing_steps = round(self.replacing_share * steps(context, self))
            schedule = ConstantReplacementSchedule(self.replacement_rate, replacing_steps)
        return model, schedule

    def callbacks(
        self, context: MethodContext, schedule: Any, seed: int, model_dir: Path
    ) -> list[Any]:
        from loyalkit.callbacks import ModuleReplacementCallback

        return [ModuleReplacementCallback(schedule, seed=seed, export_dir=str(model_dir))]

    def build(self, context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
        model, schedule = self.replacement(context, run, seed)
        train(
            context,
            model,
            self,
            seed,
            model_dir,
            self.callbacks(context, schedule, seed, model_dir),
        )
        if context.is_main_process:  # the callback exported the successor
            context.tokenizer.save_pretrained(model_dir)

    def title(self, variant: float | None) -> str:
        return f"Theseus-L{self.student_layers}"
