"""``Trainer.predict`` of an OpenVINO int8 model under torchrun with 2 CPU processes (gloo).

References: the single-process run of the same worker (``tests/int8_distributed_worker.py``), and
the model's own forward over the 40 rows: both processes' shards, gathered in order, must give the
same logits and the same mean loss.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from test_distributed import LAUNCHERS, free_port, make_teacher, run
from tiny_bert import tiny_sentiment_texts
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from loyalkit.compression import OpenVINOInt8Classifier, export_int8

WORKER = Path(__file__).resolve().parent / "int8_distributed_worker.py"


def test_two_processes_predict_what_one_does(tmp_path: Path) -> None:
    teacher_dir = make_teacher(tmp_path / "teacher")
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    calibration = [
        tokenizer(
            ["a good film", "a bad film", "great", "awful"], return_tensors="pt", padding=True
        )
    ]
    int8_dir = tmp_path / "int8"
    export_int8(teacher, int8_dir, calibration)
    tokenizer.save_pretrained(int8_dir)
    run(
        [sys.executable, str(WORKER), str(int8_dir), str(tmp_path / "one")],
        tmp_path / "one.log",
        600,
    )
    run(
        [*LAUNCHERS["torchrun"](free_port()), str(WORKER), str(int8_dir), str(tmp_path / "two")],
        tmp_path / "two.log",
        600,
    )
    one = json.loads((tmp_path / "one" / "predictions.json").read_text())
    two = json.loads((tmp_path / "two" / "predictions.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2)
    assert np.asarray(two["logits"]).shape == (40, 2)
    np.testing.assert_allclose(two["logits"], one["logits"], rtol=0, atol=1e-5)
    texts, _ = tiny_sentiment_texts(40, seed=5)
    batch = tokenizer(
        texts, padding="max_length", truncation=True, max_length=16, return_tensors="pt"
    )
    direct = OpenVINOInt8Classifier.from_pretrained(int8_dir)(**batch).logits.numpy()
    np.testing.assert_allclose(one["logits"], direct, rtol=0, atol=1e-5)
    assert abs(two["loss"] - one["loss"]) < 1e-5
