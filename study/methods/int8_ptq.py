"""int8 post-training static quantization of the teacher (OpenVINO + NNCF), no training."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from loyalkit.study.methods import MethodContext, MethodSettings, RunSpec, register, save_int8
from loyalkit.study.schema import integer


@register
@dataclass(frozen=True)
class Int8PTQSettings(MethodSettings):
    """int8 post-training quantization of the teacher for CPU deployment
    (:func:`~loyalkit.compression.export_int8`: OpenVINO + NNCF, activation ranges calibrated on
    ``calibration_rows`` training examples), no training."""

    name = "int8-ptq"
    order = 10

    calibration_rows: int = integer(512, 1)

    def build(self, context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
        model = copy.deepcopy(context.teacher).eval()
        save_int8(context, model, model_dir, self.calibration_rows)

    def title(self, variant: float | None) -> str:
        return "Q8-PTQ"
