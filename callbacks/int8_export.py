"""int8 for CPU deployment at the end of a plain ``transformers.Trainer`` run (OpenVINO + NNCF).

A thin adapter over :func:`loyalkit.compression.export_int8`: when training ends, the main process
quantizes a copy of the trained float model with NNCF (activation ranges calibrated on the first
``calibration_rows`` rows of the Trainer's training batches) and writes it, with the tokenizer, to
``save_directory``; :class:`~loyalkit.compression.OpenVINOInt8Classifier` reloads that folder and
goes into ``Trainer.predict``/``evaluate``. ``trainer.model`` stays the float model, so
``trainer.save_model`` and ``trainer.evaluate`` after training are unchanged.

After :class:`QuantizationAwareTrainingCallback` with ``convert_at_end=False`` the export takes
the fake-quantized model's trained float weights (:func:`~loyalkit.compression.strip_fake_quantization`
on the copy). A callback that makes the model int8 at train end (post-training quantization, QAT
with ``convert_at_end=True``) conflicts with it before training starts: NNCF quantizes the float
model itself.

Example (``model``, ``args``, ``train_set`` as for any Trainer run)::

    from transformers import Trainer
    from loyalkit.callbacks import DistillationCallback, OpenVINOInt8ExportCallback
    from loyalkit.compression import OpenVINOInt8Classifier

    export = OpenVINOInt8ExportCallback("student-int8")
    trainer = Trainer(model=model, args=args, train_dataset=train_set,
                      callbacks=[DistillationCallback(teacher), export])
    trainer.train()
    int8 = OpenVINOInt8Classifier.from_pretrained("student-int8")
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from loyalkit.callbacks.conflicts import Change, register_callback
from loyalkit.compression.openvino_int8 import Int8Export, calibration_batches, export_int8
from loyalkit.compression.quantization import is_fake_quantized, strip_fake_quantization

__all__ = ["OpenVINOInt8ExportCallback", "OpenVINOInt8ExportConfig"]


@dataclass(frozen=True)
class OpenVINOInt8ExportConfig:
    """The settings of :class:`OpenVINOInt8ExportCallback`; validated once, here."""

    save_directory: str
    calibration_rows: int = 512

    def __post_init__(self) -> None:
        if isinstance(self.save_directory, Path):
            object.__setattr__(self, "save_directory", str(self.save_directory))
        if not isinstance(self.save_directory, str) or not self.save_directory:
            raise ValueError(
                f"save_directory must be a non-empty path, got {self.save_directory!r}"
            )
        rows = self.calibration_rows
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"calibration_rows must be a positive int, got {rows!r}")

    def as_arguments(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready."""
        return asdict(self)


def training_rows(dataloader: Any, rows: int, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """The first ``rows`` training examples, collated as the Trainer collates them, in batches of
    ``batch_size`` (:func:`~loyalkit.compression.openvino_int8.calibration_batches`).

    Read from the dataloader's dataset and collator, not by iterating the dataloader: the rows do
    not depend on the sampler's shuffling, and under ``accelerate`` iterating the prepared
    dataloader on the main process alone would start a collective the other processes never join.
    """
    dataset = getattr(dataloader, "dataset", None)
    collate = getattr(dataloader, "collate_fn", None)
    if dataset is None or collate is None:
        raise ValueError(
            "OpenVINOInt8ExportCallback calibrates on the training data: the Trainer's "
            f"train_dataloader ({type(dataloader).__name__}) has no dataset and collate_fn"
        )
    return calibration_batches(dataset, collate, rows, batch_size)


class OpenVINOInt8ExportCallback(TrainerCallback):
    """Write an OpenVINO int8 copy of the trained model to ``save_directory`` when training ends.

    ``calibration_rows`` training rows (from the Trainer's training dataloader, labels dropped)
    set the int8 activation ranges. ``result`` holds the :class:`~loyalkit.compression.Int8Export`
    on the main process after training (``None`` on the others, which do not export).
    """

    unique: ClassVar[str | None] = "both would write an int8 export at train end"

    def __init__(self, save_directory: str | Path, calibration_rows: int = 512) -> None:
        directory = str(save_directory) if isinstance(save_directory, Path) else save_directory
        self.config = OpenVINOInt8ExportConfig(directory, calibration_rows)
        self.result: Int8Export | None = None

    @property
    def save_directory(self) -> str:
        return self.config.save_directory

    def changes(self) -> tuple[Change, ...]:
        """What this callback modifies (see :mod:`loyalkit.callbacks.conflicts`)."""
        return (
            Change(
                "export",
                "exports an OpenVINO int8 copy of the float model at train end",
                at_train_end=True,
                needs_float=True,
            ),
        )

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        register_callback(self, state, kwargs.get("model"))

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if not state.is_world_process_zero:
            return
        model = kwargs.get("model")
        if not isinstance(model, nn.Module):
            raise ValueError("the Trainer passed no model to OpenVINOInt8ExportCallback")
        dataloader = kwargs.get("train_dataloader")
        if dataloader is None:
            raise ValueError(
                "OpenVINOInt8ExportCallback calibrates on the training data: the Trainer "
                "passed no train_dataloader"
            )
        rows = self.config.calibration_rows
        batches = training_rows(dataloader, rows, args.per_device_train_batch_size)
        fake_quantized = is_fake_quantized(model)
        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        if fake_quantized or not on_cpu:  # trainer.model itself stays as it is
            model = copy.deepcopy(model).cpu()
            if fake_quantized:  # QAT left for the export: its trained float weights
                strip_fake_quantization(model)
        self.result = export_int8(model, self.save_directory, batches, max_rows=rows)
        tokenizer = kwargs.get("processing_class")
        if tokenizer is not None:
            tokenizer.save_pretrained(self.save_directory)
