"""Fine-tune the MiniLM-L6 encoder from PyPI on SST-2 as the teacher of the real study.

The study can fine-tune its teacher itself (``teacher.fine_tune``); for the SST-2 run the teacher is
trained once here, on more data than the study's default, and handed to every seed of the study as
an already fine-tuned classifier, as a user with their own teacher would.

    .venv/bin/python benchmarks/sst2_teacher.py --data ../shared/data/sst2 \
        --output /tmp/sst2-teacher --train-examples 6000 --epochs 2 --threads 2
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sst2 import minilm_path, read_sst2  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/sst2"))
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--train-examples", type=int, default=6000)
    parser.add_argument("--epochs", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    torch.set_num_threads(args.threads)
    encoder = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    tokenizer.model_max_length = 128
    texts, labels = read_sst2(args.data / "train.tsv")
    order = np.random.default_rng(args.seed).permutation(len(texts))[: args.train_examples]
    train = Dataset.from_dict(
        {"sentence": [texts[i] for i in order], "label": [labels[i] for i in order]}
    )
    dev_texts, dev_labels = read_sst2(args.data / "dev.tsv")
    dev = Dataset.from_dict({"sentence": dev_texts, "label": dev_labels})

    def tokenize(batch: dict) -> dict:
        return tokenizer(batch["sentence"], truncation=True, max_length=64)

    train, dev = (d.map(tokenize, batched=True) for d in (train, dev))
    model = AutoModelForSequenceClassification.from_pretrained(
        encoder,
        num_labels=2,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    training = TrainingArguments(
        output_dir=str(args.output / "checkpoints"),
        num_train_epochs=args.epochs,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=64,
        learning_rate=5e-5,
        warmup_steps=0.06,  # a float below 1 is a ratio of the training steps (transformers 5)
        weight_decay=0.01,
        save_strategy="no",
        eval_strategy="no",
        logging_steps=50,
        seed=args.seed,
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=lambda p: {
            "accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())
        },
    )
    trainer.train()
    print(trainer.evaluate(dev))
    trainer.save_model(str(args.output))


if __name__ == "__main__":
    main()
