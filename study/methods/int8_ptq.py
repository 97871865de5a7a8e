"""int8 post-training dynamic quantization of the teacher (torchao), no training."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loyalkit.study.methods import MethodContext, MethodSettings, RunSpec, register, save
from loyalkit.study.schema import checked_by


def _check(symmetric_activations: Any) -> None:
    from loyalkit.compression.quantization import check_int8_options

    check_int8_options("torchao", symmetric_activations)


@register
@dataclass(frozen=True)
class Int8PTQSettings(MethodSettings):
    """int8 dynamic post-training quantization (torchao) of the teacher, no training."""

    name = "int8-ptq"
    order = 10

    symmetric_activations: bool = checked_by(True, "true or false", "quantize_dynamic_int8", _check)

    def build(self, context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
        from loyalkit.compression import quantize_dynamic_int8

        model = copy.deepcopy(context.teacher).eval()
        symmetric = self.symmetric_activations
        quantize_dynamic_int8(model, backend="torchao", symmetric_activations=symmetric)
        save(context, model, model_dir)

    def title(self, variant: float | None) -> str:
        return "Q8-PTQ"
