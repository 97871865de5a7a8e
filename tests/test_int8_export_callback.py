"""OpenVINOInt8ExportCallback: the Trainer's model exported as export_int8 exports it, at train end.

References: the folder the callback writes must give, bit for bit, the logits of the folder that
:func:`export_int8` writes when called by hand on the same trained float weights with the first
``calibration_rows`` training rows (collated as the Trainer collates them); the Trainer's own model
must be left as training left it; conflicting callbacks fail before the first step.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny_bert import tiny_bert
from trainer_helpers import plain_trainer, probe_batch, training_args
from transformers import DataCollatorWithPadding

from loyalkit.callbacks import (
    DistillationCallback,
    OpenVINOInt8ExportCallback,
    OpenVINOInt8ExportConfig,
    QuantizationAwareTrainingCallback,
)
from loyalkit.callbacks.int8_export import training_rows
from loyalkit.compression import (
    OpenVINOInt8Classifier,
    export_int8,
    is_fake_quantized,
    strip_fake_quantization,
)


def int8_logits(folder: Path, batch: dict[str, torch.Tensor]) -> np.ndarray:
    model = OpenVINOInt8Classifier.from_pretrained(folder)
    with torch.no_grad():
        return model(**batch).logits.numpy()


def by_hand(model: Any, tokenizer: Any, dataset: Any, rows: int, batch_size: int, folder: Path):  # type: ignore[no-untyped-def]
    """export_int8 on the first ``rows`` rows, padded per batch as the Trainer's collator pads."""
    collator = DataCollatorWithPadding(tokenizer)
    batches = []
    for start in range(0, rows, batch_size):
        batch = collator([dataset[i] for i in range(start, min(start + batch_size, rows))])
        batches.append({k: v for k, v in batch.items() if k != "labels"})
    return export_int8(model, folder, batches, max_rows=rows)


def test_qat_then_export_writes_what_export_int8_writes(sentiment, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tokenizer, dataset = sentiment
    teacher = tiny_bert(seed=1)
    export = OpenVINOInt8ExportCallback(tmp_path / "int8", calibration_rows=20)
    callbacks = [
        DistillationCallback(teacher),
        QuantizationAwareTrainingCallback(convert_at_end=False),
        export,
    ]
    trainer = plain_trainer(
        sentiment, tiny_bert(seed=0).train(), training_args(tmp_path / "run"), callbacks
    )
    trainer.train()
    assert is_fake_quantized(trainer.model)  # the Trainer's model is left as QAT left it
    float_model = copy.deepcopy(trainer.model)
    strip_fake_quantization(float_model)
    expected = by_hand(float_model, tokenizer, dataset, 20, 8, tmp_path / "by-hand")
    assert export.result is not None
    assert export.result.calibration_rows == 20  # batches of 8: 8 + 8 + 4 rows
    assert export.result.quantized_matmuls == expected.quantized_matmuls > 0
    batch = probe_batch(tokenizer)
    np.testing.assert_array_equal(
        int8_logits(tmp_path / "int8", batch), int8_logits(tmp_path / "by-hand", batch)
    )
    config = json.loads((tmp_path / "int8" / "config.json").read_text())
    assert config["loyalkit_int8"]["calibration_rows"] == 20
    assert (tmp_path / "int8" / "tokenizer.json").is_file()  # the folder is complete for the Hub


def test_a_float_run_is_exported_and_left_float(sentiment, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    tokenizer, dataset = sentiment
    export = OpenVINOInt8ExportCallback(str(tmp_path / "int8"), calibration_rows=512)
    trainer = plain_trainer(
        sentiment, tiny_bert(seed=0).train(), training_args(tmp_path / "run"), [export]
    )
    trainer.train()
    assert export.result is not None and export.result.calibration_rows == len(dataset) == 48
    assert not is_fake_quantized(trainer.model)
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    expected = by_hand(trainer.model, tokenizer, dataset, 48, 8, tmp_path / "by-hand")
    batch = probe_batch(tokenizer)
    np.testing.assert_array_equal(
        int8_logits(tmp_path / "int8", batch), int8_logits(tmp_path / "by-hand", batch)
    )
    assert expected.quantized_matmuls == export.result.quantized_matmuls


def test_calibration_rows_do_not_follow_the_shuffled_order(sentiment) -> None:  # type: ignore[no-untyped-def]
    tokenizer, dataset = sentiment
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=8,
        shuffle=True,
        collate_fn=DataCollatorWithPadding(tokenizer),
    )
    batches = list(training_rows(loader, rows=10, batch_size=4))
    assert [len(b["input_ids"]) for b in batches] == [4, 4, 2]
    assert all("labels" not in b for b in batches)
    first = [dataset[i]["input_ids"] for i in range(4)]
    got = [row[row != tokenizer.pad_token_id].tolist() for row in batches[0]["input_ids"]]
    assert got == first


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"save_directory": ""}, "save_directory must be a non-empty path, got ''"),
        ({"save_directory": 3}, "save_directory must be a non-empty path, got 3"),
        ({"save_directory": "x", "calibration_rows": 0}, "calibration_rows must be a positive"),
        ({"save_directory": "x", "calibration_rows": True}, "calibration_rows must be a positive"),
    ],
)
def test_bad_settings_are_named(arguments: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OpenVINOInt8ExportConfig(**arguments)
