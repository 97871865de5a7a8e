"""A tiny fine-tuned teacher and a tiny sentiment task on disk, for the study's tests."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_bert import fit_full_batch, tiny_bert, tiny_sentiment_texts, tiny_tokenizer

LABEL_NAMES = ("negative", "positive")


def write_split(path: Path, n: int, seed: int) -> Path:
    """A TSV file ``sentence<TAB>label`` with string labels, like a run_glue-style local file."""
    texts, labels = tiny_sentiment_texts(n, seed)
    with path.open("w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, delimiter="\t", quoting=csv.QUOTE_NONE)
        writer.writerow(["sentence", "label"])
        writer.writerows(
            (text, LABEL_NAMES[label]) for text, label in zip(texts, labels, strict=True)
        )
    return path


def read_split(path: Path) -> tuple[list[str], list[int]]:
    """The sentences of a :func:`write_split` file and their label ids."""
    with path.open(encoding="utf-8") as file:
        rows = list(csv.DictReader(file, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [r["sentence"] for r in rows], [LABEL_NAMES.index(r["label"]) for r in rows]


def saved_model_logits(
    model_dir: Path, texts: list[str], pairs: list[str] | None = None
) -> torch.Tensor:
    """Logits of the model saved in ``model_dir``, reloaded with the tokenizer saved beside it, on
    ``texts`` (first segments, with ``pairs`` as second ones), padded together at 32 tokens; an
    int8 folder through its documented loader (``OpenVINOInt8Classifier.from_pretrained``)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from loyalkit.compression import OpenVINOInt8Classifier, is_openvino_int8

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if is_openvino_int8(model_dir):
        model = OpenVINOInt8Classifier.from_pretrained(model_dir).eval()
    else:
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    segments = (texts,) if pairs is None else (texts, pairs)
    batch = tokenizer(*segments, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


class CountingMethods:
    """Wraps the study's methods' build functions to count the (method, seed) runs that really train."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from loyalkit.study import methods as study_methods

        self.calls: list[tuple[str, int]] = []
        for method in study_methods.REGISTRY.values():
            if "build" in vars(method):  # an inherited build is wrapped once, in its own class
                monkeypatch.setattr(method, "build", self._wrap(method.build))

    def _wrap(self, function: Any) -> Any:
        def counted(settings: Any, context: Any, run: Any, seed: int, model_dir: Path) -> None:
            self.calls.append((run.method, seed))
            function(settings, context, run, seed, model_dir)

        return counted


def write_teacher(folder: Path, train_file: Path, steps: int = 40) -> Path:
    """A 2-layer tiny BERT fitted to ``train_file`` (full batch, AdamW), saved with its tokenizer
    and ``id2label`` = :data:`LABEL_NAMES`."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(folder)
    texts, labels = read_split(train_file)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    model = fit_full_batch(tiny_bert(num_labels=2, num_layers=2, seed=1), batch, labels, steps)
    model.config.id2label = dict(enumerate(LABEL_NAMES))
    model.config.label2id = {name: i for i, name in enumerate(LABEL_NAMES)}
    model.eval().save_pretrained(folder)
    return folder


def tiny_study(root: Path, **overrides: Any) -> dict[str, Any]:
    """A config mapping (what a config file holds) for a study of the tiny teacher on tiny data.

    The teacher and data are written under ``root`` once; ``overrides`` replace top-level keys.
    """
    train, dev = root / "train.tsv", root / "dev.tsv"
    if not train.exists():
        write_split(train, 64, seed=0)
        write_split(dev, 24, seed=1)
        write_teacher(root / "teacher", train)
    config: dict[str, Any] = {
        "task": {"train_file": str(train), "validation_file": str(dev)},
        "teacher": {"model": str(root / "teacher"), "fine_tune": "auto", "max_length": 32},
        "methods": {
            "int8-ptq": {},
            "kd-logit": {"student_layers": 1, "epochs": 1, "batch_size": 16, "learning_rate": 1e-3},
        },
        "attack": {"enabled": False},
        "measure": {"latency_repeats": 3, "latency_warmup": 1, "latency_batch_size": 8},
        "seeds": [0, 1],
        "output_dir": str(root / "study"),
    }
    config.update(overrides)
    return config
