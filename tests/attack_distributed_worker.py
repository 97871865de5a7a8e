"""AttackCallback in a Trainer run, alone or under a distributed launcher; also the attack tests'
shared scaffolding (a fitted tiny classifier, offline TextAttack resources, raw-text datasets).

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
from typing import Any

_TESTS = str(Path(__file__).resolve().parent)
if _TESTS not in sys.path:  # run as a script: tiny_bert lies next to it
    sys.path.insert(0, _TESTS)

import torch  # noqa: E402
from tiny_bert import tiny_bert, tiny_sentiment_texts, tiny_tokenizer  # noqa: E402

ATTACK_EXAMPLES = 8
TRAIN_SIZE = 48
EVAL_SIZE = 24


def offline_resources(folder: Path) -> Any:
    """TextAttack's offline resources in ``folder``: stop words (no WordNet) and its cache."""
    from loyalkit.robustness.textattack_setup import OfflineResources, prepare_nltk_data

    nltk_data = folder / "nltk_data"
    if not (nltk_data / "corpora" / "stopwords" / "english").is_file():
        prepare_nltk_data(nltk_data, wordnet_dir=None)
    return OfflineResources(nltk_data=nltk_data, cache_dir=folder / "textattack")


def raw_dataset(n: int, seed: int, tokenizer: Any = None) -> Any:
    """``datasets.Dataset`` of toy sentences: ``sentence``, ``label`` (and tokens if asked)."""
    from datasets import Dataset

    texts, labels = tiny_sentiment_texts(n, seed)
    columns: dict[str, Any] = {"sentence": texts, "label": labels}
    if tokenizer is not None:
        columns.update(tokenizer(texts, truncation=True, max_length=16))
    return Dataset.from_dict(columns)


def make_classifier(folder: Path, steps: int = 40) -> Path:
    """A tiny BERT fitted to the toy sentiment task (right on most, not all, examples), saved with
    its tokenizer in ``folder``."""
    torch.set_num_threads(1)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(folder)
    texts, labels = tiny_sentiment_texts(TRAIN_SIZE, seed=0)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    model = tiny_bert(seed=1).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        model(**batch, labels=torch.tensor(labels)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(folder)
    return folder


def main(model_dir: Path, resources_dir: Path, output_dir: Path) -> None:
    import torch.distributed as dist
    from transformers import (
        AutoTokenizer,
        BertForSequenceClassification,
        Trainer,
        TrainingArguments,
    )

    from loyalkit.callbacks import AttackCallback

    torch.set_num_threads(1)
    output_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = BertForSequenceClassification.from_pretrained(model_dir)
    args = TrainingArguments(
        output_dir=str(output_dir / "trainer"),
        max_steps=2,
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        learning_rate=0.0,
        eval_strategy="steps",
        eval_steps=1,
        logging_steps=1,
        save_strategy="no",
        seed=0,
        report_to="none",
        use_cpu=True,
        ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None,
        ddp_timeout=60,  # a hung collective fails within a minute
        disable_tqdm=True,
        dataloader_num_workers=0,
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
        "attacked_here": callback.last_report is not None,
        "failures": callback.failures,
    }
    (output_dir / f"rank-{rank}.json").write_text(json.dumps(result, indent=1))
    if dist.is_initialized():
        dist.barrier()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit("usage: attack_distributed_worker.py MODEL_DIR RESOURCES_DIR OUTPUT_DIR")
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
