"""Layer dropping + FFN pruning + KD under ``torchrun`` with 2 CPU processes (gloo).

``tests/structured_distributed_worker.py`` runs once alone and once under torchrun. References:
every rank must hold the same neurons masked and bitwise the same final weights (ranks that scored
different batches would mask different neurons and drift apart), the same neurons as the single
process (the scoring batches do not depend on the sharding), and the saved model must reload with
a plain ``from_pretrained`` to 2 layers of 32 neurons.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from test_distributed import LAUNCHERS, free_port, make_teacher, run
from transformers import AutoModelForSequenceClassification

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
