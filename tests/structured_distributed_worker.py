"""Layer dropping, FFN pruning (gradient importance) and KD in one Trainer run, alone or under torchrun.

``tests/test_structured_distributed.py`` runs this as a single process and with 2 CPU processes
(gloo). The run: a copy of the tiny 4-layer teacher loses every other layer (``on_init_end``,
before DDP wraps it), half of its FFN neurons are scored on two unshuffled batches and silenced,
and it trains 4 SGD steps with logit KD; the neurons are removed at train end. Every rank writes
``OUTPUT_DIR/rank-<r>.json`` (masked neurons, a digest of the final weights, what DDP wrapped);
rank 0 saves the model to ``OUTPUT_DIR/model``.

Usage: ``python tests/structured_distributed_worker.py TEACHER_DIR OUTPUT_DIR`` (or under torchrun).
"""

from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:  # run as a script: its helpers lie next to it
    sys.path.insert(0, _TESTS)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from distributed_worker import MAX_LENGTH, TRAIN_SIZE, digest, sgd_args  # noqa: E402
from tiny_bert import tiny_sentiment_dataset  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
)

from loyalkit.callbacks import (  # noqa: E402
    DistillationCallback,
    FfnPruningCallback,
    LayerDroppingCallback,
    OpenVINOInt8ExportCallback,
)

CALIBRATION_ROWS = 12  # the int8 export's, in the batches of this rank's size


def main(teacher_dir: Path, output_dir: Path) -> None:
    torch.set_num_threads(1)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = BertForSequenceClassification.from_pretrained(teacher_dir).eval()
    student = copy.deepcopy(teacher).train()
    args = sgd_args(output_dir, rank, world_size, max_steps=4)
    export = OpenVINOInt8ExportCallback(output_dir / "int8", calibration_rows=CALIBRATION_ROWS)
    pruning = FfnPruningCallback(fraction=0.5, importance="gradient", num_batches=2, batch_size=4)
    trainer = Trainer(
        model=student,
        args=args,
        train_dataset=tiny_sentiment_dataset(tokenizer, n=TRAIN_SIZE, seed=0),
        data_collator=DataCollatorWithPadding(
            tokenizer, padding="max_length", max_length=MAX_LENGTH
        ),
        callbacks=[
            LayerDroppingCallback(count=2, strategy="alternate"),
            pruning,
            DistillationCallback(teacher, temperature=2.0, alpha=0.5),
            export,
        ],
    )
    trainer.train()
    model = trainer.model
    assert model is not None
    result = {
        "rank": rank,
        "world_size": trainer.args.world_size,
        "wrapper": type(trainer.model_wrapped).__name__,
        "masked_neurons": pruning.masked_neurons,
        "weights_digest": digest(dict(model.state_dict())),
        "layers": model.config.num_hidden_layers,
        "intermediate_size": model.config.intermediate_size,
        "int8_rows": None if export.result is None else export.result.calibration_rows,
    }
    (output_dir / f"rank-{rank}.json").write_text(json.dumps(result, indent=1))
    if rank == 0:
        model.save_pretrained(output_dir / "model")
    if dist.is_initialized():
        dist.barrier()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
