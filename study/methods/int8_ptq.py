"""int8 post-training dynamic quantization of the teacher (torchao), no training."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from loyalkit.study.methods._registry import MethodSettings, RunSpec, register
from loyalkit.study.methods._training import MethodContext, save
from loyalkit.study.schema import flag


@dataclass(frozen=True)
class Int8PTQSettings(MethodSettings):
    """int8 post-training dynamic quantization of the teacher (torchao), no training."""

    symmetric_activations: bool = flag(True)


@register("int8-ptq", Int8PTQSettings, lambda settings, _: "Q8-PTQ", order=10)
def int8_ptq(context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
    """int8 dynamic post-training quantization (torchao) of the teacher, no training."""
    from loyalkit.compression import quantize_dynamic_int8

    settings = run.settings
    assert isinstance(settings, Int8PTQSettings)
    model = copy.deepcopy(context.teacher).eval()
    quantize_dynamic_int8(
        model, backend="torchao", symmetric_activations=settings.symmetric_activations
    )
    save(context, model, model_dir)
