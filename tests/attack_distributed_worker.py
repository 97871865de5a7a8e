"""AttackCallback in a Trainer run, alone or under a distributed launcher.

``tests/test_attack_distributed.py`` runs this script as a single process and with 2 CPU processes
(gloo) under ``torchrun`` and ``accelerate launch``. The run: the saved tiny classifier, two
training steps at learning rate 0 (the weights stay the saved ones, so every run attacks the same
model and the numbers can be compared exactly), an evaluation after each step with an
AttackCallback (DeepWordBug, 8 examples), and a final ``evaluate()``. Every rank writes
``OUTPUT_DIR/rank-<r>.json`` (its log history, final metrics and whether it ran the attack).

Usage: ``python tests/attack_distributed_worker.py MODEL_DIR RESOURCES_DIR OUTPUT_DIR``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:  # run as a script: the helpers lie next to it
    sys.path.insert(0, _TESTS)

import torch  # noqa: E402
from attack_helpers import TRAIN_SIZE, offline_resources, raw_dataset  # noqa: E402
from trainer_helpers import training_args  # noqa: E402

ATTACK_EXAMPLES = 8
EVAL_SIZE = 24


def main(model_dir: Path, resources_dir: Path, output_dir: Path) -> None:
    import torch.distributed as dist
    from transformers import AutoTokenizer, BertForSequenceClassification, Trainer

    from loyalkit.callbacks import AttackCallback

    torch.set_num_threads(1)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(model_dir)
    # At learning rate 0 the weights stay the saved ones whatever the schedule.
    args = training_args(
        output_dir / "trainer",
        max_steps=2,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=0.0,
        eval_strategy="steps",
        eval_steps=1,
        ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None,
        ddp_timeout=60,  # a hung collective fails within a minute
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=raw_dataset(TRAIN_SIZE, 0, tokenizer),
        eval_dataset=raw_dataset(EVAL_SIZE, 1, tokenizer),
        processing_class=tokenizer,
    )
    callback = AttackCallback(
        "deepwordbug",
        num_examples=ATTACK_EXAMPLES,
        seed=3,
        resources=offline_resources(resources_dir),
    ).attach(trainer)
    trainer.train()
    final = trainer.evaluate()
    rank = dist.get_rank() if dist.is_initialized() else 0
    result = {
        "rank": rank,
        "world_size": dist.get_world_size() if dist.is_initialized() else 1,
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "log_history": trainer.state.log_history,
        "final_eval": final,
        "attacked_here": callback.worker.starts > 0,
        "attacked_rows": callback.attacked_positions,
        "failures": callback.failures,
    }
    (output_dir / f"rank-{rank}.json").write_text(json.dumps(result, indent=1))
    if dist.is_initialized():
        dist.barrier()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit("usage: attack_distributed_worker.py MODEL_DIR RESOURCES_DIR OUTPUT_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
