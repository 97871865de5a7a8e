"""Callback configuration spelled one way: each compression callback keeps its settings in a frozen
``config`` dataclass validated once on construction, whose ``as_arguments()`` is JSON-ready and
builds an equal config (how a resumed run's ``ExportableState`` rebuilds the callback)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from loyalkit.callbacks import (
    FfnPruningCallback,
    FfnPruningConfig,
    HeadPruningCallback,
    HeadPruningConfig,
    LayerDroppingCallback,
    LayerDroppingConfig,
    MagnitudePruningCallback,
    MagnitudePruningConfig,
    ModuleReplacementCallback,
    ModuleReplacementConfig,
    OpenVINOInt8ExportCallback,
    OpenVINOInt8ExportConfig,
    PostTrainingQuantizationCallback,
    PostTrainingQuantizationConfig,
    QuantizationAwareTrainingCallback,
    QuantizationAwareTrainingConfig,
)
from loyalkit.compression import CubicSchedule, LinearReplacementSchedule

CALLBACKS: list[tuple[Any, type]] = [
    (
        lambda: MagnitudePruningCallback(CubicSchedule(0.5, 0, 10), "global", r".*query"),
        MagnitudePruningConfig,
    ),
    (lambda: HeadPruningCallback({0: 0.25, 5: 0.5}, importance="magnitude"), HeadPruningConfig),
    (lambda: FfnPruningCallback(fraction=0.5, step=3, num_batches=2), FfnPruningConfig),
    (lambda: LayerDroppingCallback([0, 2, 4]), LayerDroppingConfig),
    (lambda: LayerDroppingCallback(count=3, strategy="alternate"), LayerDroppingConfig),
    (
        lambda: ModuleReplacementCallback(
            LinearReplacementSchedule(0.01, 0.3), seed=3, export_dir="out"
        ),
        ModuleReplacementConfig,
    ),
    (lambda: PostTrainingQuantizationCallback(backend="torchao"), PostTrainingQuantizationConfig),
    (lambda: QuantizationAwareTrainingCallback(False), QuantizationAwareTrainingConfig),
    (lambda: OpenVINOInt8ExportCallback("int8", calibration_rows=64), OpenVINOInt8ExportConfig),
]


@pytest.mark.parametrize(("make", "config_class"), CALLBACKS)
def test_config_round_trips_through_json(make: Any, config_class: type) -> None:
    torch.set_num_threads(1)
    callback = make()
    assert isinstance(callback.config, config_class)
    arguments = json.loads(json.dumps(callback.config.as_arguments()))
    assert config_class(**arguments) == callback.config
    state = getattr(callback, "state", None)
    if state is not None:  # the resumable ones save exactly these arguments
        assert json.loads(json.dumps(state()["args"])) == arguments


def test_the_callbacks_read_their_settings_from_the_config() -> None:
    pruning = MagnitudePruningCallback({"kind": "one_shot", "target_sparsity": 0.5}, "global")
    assert pruning.schedule.value_at(0) == 0.5 and pruning.scope == "global"
    replacement = ModuleReplacementCallback({"kind": "constant", "rate": 0.25}, export_dir="x")
    assert replacement.schedule.value_at(3) == 0.25 and replacement.export_dir == "x"
    assert PostTrainingQuantizationCallback("torch.ao").backend == "torch.ao"
    assert not QuantizationAwareTrainingCallback(convert_at_end=False).convert_at_end


@pytest.mark.parametrize(
    ("build", "error", "message"),
    [
        (
            lambda: MagnitudePruningConfig(CubicSchedule(0.5, 0, 10), scope="model"),
            ValueError,
            "scope",
        ),
        (lambda: MagnitudePruningConfig(0.5), TypeError, "schedule"),  # type: ignore[arg-type]
        (
            lambda: ModuleReplacementConfig(LinearReplacementSchedule(), seed=True),
            TypeError,
            "seed",
        ),
        (lambda: ModuleReplacementConfig(0.5), TypeError, "schedule"),  # type: ignore[arg-type]
        (lambda: PostTrainingQuantizationConfig("int4"), ValueError, "`backend`"),  # type: ignore[arg-type]
        (lambda: QuantizationAwareTrainingConfig(1), TypeError, "`convert_at_end`"),  # type: ignore[arg-type]
        (
            lambda: PostTrainingQuantizationConfig(symmetric_activations=1),  # type: ignore[arg-type]
            TypeError,
            "`symmetric_activations` must be a bool",
        ),
    ],
)
def test_bad_settings_are_named_by_the_config(build: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        build()


def test_distillation_keeps_compressions_own_config() -> None:
    from tiny_bert import tiny_bert

    from loyalkit.callbacks import DistillationCallback
    from loyalkit.compression import DistillationConfig

    callback = DistillationCallback(tiny_bert(), temperature=3.0, alpha=0.25)
    assert callback.config == DistillationConfig(temperature=3.0, alpha=0.25)
