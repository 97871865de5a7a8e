"""Layer dropping + FFN pruning + KD under ``torchrun`` with 2 CPU processes (gloo).

``tests/structured_distributed_worker.py`` runs once alone and once under torchrun. References:
every rank must hold the same neurons masked and bitwise the same final weights (ranks that scored
different batches would mask different neurons and drift apart), the same neurons as the single
process (the scoring batches do not depend on the sharding), and the saved model must reload with
a plain ``from_pretrained`` to 2 layers of 32 neurons. The int8 export at train end is written by
rank 0 alone, and gives bit for bit the logits of ``export_int8`` called by hand on the saved
model with the first training rows.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from distributed_worker import GLOBAL_BATCH, MAX_LENGTH, TRAIN_SIZE
from structured_distributed_worker import CALIBRATION_ROWS
from test_distributed import LAUNCHERS, free_port, make_teacher, run
from tiny_bert import tiny_sentiment_dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from loyalkit.compression import OpenVINOInt8Classifier, export_int8

WORKER = Path(__file__).resolve().parent / "structured_distributed_worker.py"


def test_two_processes_drop_and_mask_the_same_as_one(tmp_path: Path) -> None:
    teacher = make_teacher(tmp_path / "teacher")
    single = tmp_path / "single"
    run([sys.executable, str(WORKER), str(teacher), str(single)], tmp_path / "single.log")
    out = tmp_path / "torchrun"
    run(
        [*LAUNCHERS["torchrun"](free_port()), str(WORKER), str(teacher), str(out)],
        tmp_path / "t.log",
    )
    (one,) = [json.loads((single / "rank-0.json").read_text())]
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in range(2)]
    assert one["wrapper"] == "BertForSequenceClassification"
    for result in ranks:
        assert result["world_size"] == 2 and result["wrapper"] == "DistributedDataParallel"
        assert (result["layers"], result["intermediate_size"]) == (2, 32)
        assert result["masked_neurons"] == one["masked_neurons"]
    assert ranks[0]["weights_digest"] == ranks[1]["weights_digest"]
    model = AutoModelForSequenceClassification.from_pretrained(out / "model")
    assert (model.config.num_hidden_layers, model.config.intermediate_size) == (2, 32)
    assert model.bert.encoder.layer[1].output.dense.weight.shape == (32, 32)
    # The int8 export: rank 0 only, calibrated on the first rows in batches of the rank's size.
    assert [r["int8_rows"] for r in ranks] == [CALIBRATION_ROWS, None]
    tokenizer = AutoTokenizer.from_pretrained(teacher)
    collate = DataCollatorWithPadding(tokenizer, padding="max_length", max_length=MAX_LENGTH)
    rows = tiny_sentiment_dataset(tokenizer, n=TRAIN_SIZE, seed=0)
    size = GLOBAL_BATCH // 2
    batches = [
        collate([rows[i] for i in range(start, start + size)])
        for start in range(0, CALIBRATION_ROWS, size)
    ]
    batches = [{k: v for k, v in b.items() if k != "labels"} for b in batches]
    export_int8(model, tmp_path / "by-hand", batches, max_rows=CALIBRATION_ROWS)
    probe = batches[0]
    with torch.no_grad():
        logits = [
            OpenVINOInt8Classifier.from_pretrained(folder)(**probe).logits.numpy()
            for folder in (out / "int8", tmp_path / "by-hand")
        ]
    np.testing.assert_array_equal(*logits)
