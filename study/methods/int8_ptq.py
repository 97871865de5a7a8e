"""int8 post-training dynamic quantization of the teacher (torchao), no training."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from loyalkit.study.methods import MethodContext, MethodSettings, RunSpec, register, save
from loyalkit.study.schema import flag


@register
@dataclass(frozen=True)
class Int8PTQSettings(MethodSettings):
    """int8 dynamic post-training quantization (torchao) of the teacher, no training."""

    name = "int8-ptq"
    order = 10

    symmetric_activations: bool = flag(True)

    def build(self, context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
        from loyalkit.compression import quantize_dynamic_int8

        model = copy.deepcopy(context.teacher).eval()
        symmetric = self.symmetric_activations
        quantize_dynamic_int8(model, backend="torchao", symmetric_activations=symmetric)
        save(context, model, model_dir)

    def title(self, variant: float | None) -> str:
        return "Q8-PTQ"
