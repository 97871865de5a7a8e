"""Logit KD plus hidden-state MSE (PKD, Sun et al. 2019): student layer i learns teacher layer i*N/L."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from loyalkit.study.methods._registry import RunSpec, register
from loyalkit.study.methods._training import MethodContext, teacher_layers
from loyalkit.study.methods.kd_logit import PAPER_STUDENT, LogitKDSettings, distill
from loyalkit.study.schema import flag, number


@dataclass(frozen=True)
class HiddenKDSettings(LogitKDSettings):
    """Logit KD plus hidden-state MSE (PKD): student layer i learns teacher layer i*N/L."""

    hidden_weight: float = number(1.0, 0, open_low=True)
    hidden_normalize: bool = flag(True)


@register(
    "kd-hidden",
    HiddenKDSettings,
    lambda settings, _: f"KD-hidden-L{settings.student_layers}",
    order=70,
    paper=HiddenKDSettings(**PAPER_STUDENT),
)
def kd_hidden(context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
    """Logit KD with the hidden-state loss (no logit cache: it needs the teacher at every step)."""
    settings = run.settings
    assert isinstance(settings, HiddenKDSettings)
    ratio = teacher_layers(context) / settings.student_layers
    distill(
        context,
        run,
        seed,
        model_dir,
        temperature=settings.temperature,
        alpha=settings.alpha,
        hidden_layer_map={i: round(i * ratio) for i in range(1, settings.student_layers + 1)},
        hidden_weight=settings.hidden_weight,
        hidden_normalize=settings.hidden_normalize,
    )
