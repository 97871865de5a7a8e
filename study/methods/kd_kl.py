"""Pure-KL KD (alpha = 1, no hard labels): the paper's upper bound for probability loyalty."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loyalkit.study.methods._registry import RunSpec, StudentSettings, register
from loyalkit.study.methods._training import MethodContext
from loyalkit.study.methods.kd_logit import PAPER_STUDENT, distill
from loyalkit.study.schema import number


@dataclass(frozen=True)
class KLKDSettings(StudentSettings):
    """Pure-KL KD (alpha = 1, no hard labels): the paper's upper bound for probability loyalty."""

    temperature: float = number(1.0, 0, open_low=True)


@register(
    "kd-kl",
    KLKDSettings,
    lambda settings, _: f"KD-KL-L{settings.student_layers}",
    order=60,
    paper=KLKDSettings(**PAPER_STUDENT),
)
def kd_kl(context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
    """KL to the teacher's soft targets only: the hard labels are not used."""
    settings = run.settings
    assert isinstance(settings, KLKDSettings)
    options = {"temperature": settings.temperature, "alpha": 1.0, "cache_teacher_logits": True}
    distill(context, run, seed, model_dir, **options)
