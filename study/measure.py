"""What the study measures of each model: size, CPU latency, accuracy, loyalty, robustness.

Loyalty and flips come from :func:`loyalkit.metrics.loyalty` (the one implementation of that
math); attacks from :mod:`loyalkit.robustness`. Latency is the median wall time of one forward
pass over the same padded batch, with a fixed torch thread count after warm-up runs, every model
timed round-robin in one process so that load on the machine hits them alike.

Example:
    >>> import tempfile
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
    ...                     num_attention_heads=2, intermediate_size=32)
    >>> model = BertForSequenceClassification(config)
    >>> count_parameters(model) == sum(p.numel() for p in model.parameters())
    True
    >>> folder = tempfile.mkdtemp()
    >>> model.save_pretrained(folder)
    >>> size_on_disk_mb(folder) > 0
    True
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from loyalkit.logits import model_logits

__all__ = [
    "MODEL_FILE_PATTERNS",
    "classification_metrics",
    "count_parameters",
    "load_student",
    "model_files",
    "predict_logits",
    "size_on_disk_mb",
    "time_models",
]

logger = logging.getLogger(__name__)

#: The files of a saved model that count as its size on disk (weights and config; the tokenizer
#: files saved beside them are the same for every model and are not counted).
MODEL_FILE_PATTERNS: tuple[str, ...] = (
    "*.safetensors",
    "*.bin",
    "*.index.json",
    "config.json",
    "openvino_model.xml",
)


def load_student(model_dir: str | Path) -> Any:
    """Load a model the study saved, on CPU in eval mode: float, int8 (OpenVINO, or torchao from
    earlier versions) or head-pruned."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from loyalkit.compression import (
        OpenVINOInt8Classifier,
        is_openvino_int8,
        load_head_pruned,
        pruned_heads_from_config,
    )

    if is_openvino_int8(model_dir):
        return OpenVINOInt8Classifier.from_pretrained(model_dir).eval()
    config = AutoConfig.from_pretrained(model_dir)
    if pruned_heads_from_config(config):
        model = load_head_pruned(model_dir)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    """Number of parameter elements (an int8 weight counts its logical elements, like a float)."""
    logical = getattr(model, "num_parameters", None)
    if isinstance(logical, int):  # an OpenVINO model: the count its float model had
        return logical
    return int(sum(p.numel() for p in model.parameters()))


def model_files(model_dir: str | Path) -> list[Path]:
    """The files of ``model_dir`` matching :data:`MODEL_FILE_PATTERNS`, sorted."""
    folder = Path(model_dir)
    found = {p for pattern in MODEL_FILE_PATTERNS for p in folder.glob(pattern) if p.is_file()}
    return sorted(found)


def size_on_disk_mb(model_dir: str | Path) -> float:
    """Size of the model's weight and config files in MiB (2**20 bytes)."""
    files = model_files(model_dir)
    if not files:
        raise ValueError(
            f"model_dir: no model files ({', '.join(MODEL_FILE_PATTERNS)}) in {model_dir}"
        )
    return sum(p.stat().st_size for p in files) / 2**20


def _model_inputs(dataset: Any) -> list[str]:
    return [c for c in dataset.column_names if c != "labels"]


def predict_logits(
    model: nn.Module, dataset: Any, collator: Any, batch_size: int = 64
) -> np.ndarray:
    """Logits of ``model`` on a tokenized dataset (model inputs, optional ``labels``), in order."""
    model.eval()
    columns = _model_inputs(dataset)

    def batches() -> Iterator[Mapping[str, Any]]:
        for start in range(0, len(dataset), batch_size):
            rows = dataset.select(range(start, min(start + batch_size, len(dataset))))
            yield collator([{c: row[c] for c in columns} for row in rows])

    return model_logits(model, batches()).numpy().astype(np.float64)


def latency_batch(dataset: Any, collator: Any, batch_size: int) -> dict[str, torch.Tensor]:
    """The first ``batch_size`` examples of a tokenized dataset as one padded batch."""
    columns = _model_inputs(dataset)
    rows = dataset.select(range(min(batch_size, len(dataset))))
    return dict(collator([{c: row[c] for c in columns} for row in rows]))


def time_models(
    models: Mapping[str, nn.Module],
    batch: Mapping[str, torch.Tensor],
    *,
    threads: int = 1,
    warmup: int = 2,
    repeats: int = 7,
) -> dict[str, float]:
    """Median milliseconds of one forward pass of each model on ``batch``, timed round-robin.

    torch runs with ``threads`` threads meanwhile (restored afterwards).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    times: dict[str, list[float]] = {name: [] for name in models}
    try:
        with torch.inference_mode():
            for model in models.values():
                model.eval()
                for _ in range(warmup):
                    model(**batch)
            for _ in range(repeats):
                for name, model in models.items():
                    start = time.perf_counter()
                    model(**batch)
                    times[name].append(1000 * (time.perf_counter() - start))
    finally:
        torch.set_num_threads(previous)
    return {name: statistics.median(values) for name, values in times.items()}


def classification_metrics(
    student_logits: np.ndarray, teacher_logits: np.ndarray, labels: Sequence[int]
) -> dict[str, float]:
    """Accuracy, label and probability loyalty, flips and KL of a student against the teacher."""
    from loyalkit.metrics import loyalty

    result = loyalty(student_logits, teacher_logits, labels=np.asarray(labels))
    return {
        "accuracy": float(result["student_accuracy"]),
        "label_loyalty": float(result["label_loyalty"]),
        "probability_loyalty": float(result["probability_loyalty"]),
        "flips": float(result["flips"]),
        "kl_divergence": float(result["kl_divergence"]),
    }
