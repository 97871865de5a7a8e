"""``Trainer.predict`` of an OpenVINO int8 model (``export_int8``), alone or under torchrun.

``tests/test_openvino_int8_distributed.py`` runs this as a single process and with 2 CPU processes
(gloo). Every rank loads the int8 folder and predicts the same 40 sentences (padded to a fixed
length, so each row's tensors do not depend on which rank batches it); rank 0 writes the gathered
logits to ``OUTPUT_DIR/predictions.json``.

Usage: ``python tests/int8_distributed_worker.py INT8_DIR OUTPUT_DIR`` (or under torchrun).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:  # run as a script: its helpers lie next to it
    sys.path.insert(0, _TESTS)

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from tiny_bert import tiny_sentiment_texts  # noqa: E402
from transformers import AutoTokenizer, Trainer, TrainingArguments  # noqa: E402

from loyalkit.compression import OpenVINOInt8Classifier  # noqa: E402


def main(int8_dir: Path, output_dir: Path) -> None:
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(int8_dir)
    texts, labels = tiny_sentiment_texts(40, seed=5)
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=16)
    data = Dataset.from_dict({**encoded, "labels": labels})
    model = OpenVINOInt8Classifier.from_pretrained(int8_dir)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    arguments = TrainingArguments(
        output_dir=str(output_dir / "trainer"),
        per_device_eval_batch_size=8,
        report_to=[],
        use_cpu=True,
        ddp_backend="gloo" if world_size > 1 else None,
        ddp_timeout=120,
    )
    trainer = Trainer(model=model, args=arguments)
    predicted = trainer.predict(data)
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        result = {
            "world_size": trainer.args.world_size,
            "logits": predicted.predictions.tolist(),
            "loss": predicted.metrics["test_loss"],
        }
        (output_dir / "predictions.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
