"""Pure-KL KD (alpha = 1, no hard labels): the paper's upper bound for probability loyalty."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loyalkit.study.methods import MethodContext, RunSpec, StudentSettings, register
from loyalkit.study.methods.kd_logit import PAPER_STUDENT, distill, kd_temperature


@register
@dataclass(frozen=True)
class KLKDSettings(StudentSettings):
    """Pure-KL KD (alpha = 1, no hard labels): the paper's upper bound for probability loyalty."""

    name = "kd-kl"
    order = 60
    paper = PAPER_STUDENT

    temperature: float = kd_temperature(1.0)

    def build(self, context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
        options = {"temperature": self.temperature, "alpha": 1.0, "cache_teacher_logits": True}
        distill(context, run, seed, model_dir, **options)

    def title(self, variant: float | None) -> str:
        return f"KD-KL-L{self.student_layers}"
