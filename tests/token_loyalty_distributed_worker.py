"""Evaluate a tiny causal LM with TokenLoyaltyCallback; write this rank's metrics as JSON.

Run as ``python token_loyalty_distributed_worker.py OUT_DIR`` or under ``torchrun`` (gloo, CPU):
tests/test_token_loyalty_callback.py compares the ranks with the single process.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from datasets import Dataset
from tiny_causal_lm import perturbed, tiny_llama, token_stream
from transformers import Trainer, TrainingArguments

from loyalkit.callbacks import TokenLoyaltyCallback


def main(output_dir: Path) -> None:
    torch.set_num_threads(1)
    ids = token_stream(11 * 16, seed=4).reshape(11, 16)  # 11 rows: uneven over 2 ranks
    labels = ids.clone()
    labels[0, :6] = -100
    dataset = Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})
    args = TrainingArguments(
        output_dir=str(output_dir / "trainer"),
        per_device_eval_batch_size=2,
        report_to="none",
        use_cpu=True,
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
    )
    trainer = Trainer(model=perturbed(tiny_llama()), args=args, eval_dataset=dataset)
    TokenLoyaltyCallback(tiny_llama()).attach(trainer)
    metrics = trainer.evaluate()
    rank = trainer.args.process_index
    metrics["world_size"] = trainer.args.world_size
    (output_dir / f"rank{rank}.json").write_text(json.dumps(metrics))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: token_loyalty_distributed_worker.py OUT_DIR")
    main(Path(sys.argv[1]))
