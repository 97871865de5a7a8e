"""``loyalkit attack run``: attack a saved classifier on a data file, print and save the outcome.

The model is loaded here (any ``AutoModelForSequenceClassification`` folder, on the newest
transformers) and queried in this process; TextAttack runs in its isolated environment
(``loyalkit attack setup``). Labels: ints are class ids; strings are mapped through the model's
``label2id`` when it names its classes, else sorted.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

#: The keys of the JSON's ``summary`` and of the printed table: (name, AttackReport key).
RESULT_KEYS: tuple[tuple[str, str], ...] = (
    ("original_accuracy", "original_accuracy"),
    ("after_attack_accuracy", "after_attack_accuracy"),
    ("success_rate", "attack_success_rate"),
    ("mean_queries", "mean_queries"),
    ("perturbed_word_share", "mean_words_perturbed"),
    ("num_attacked", "num_attacked"),
    ("num_succeeded", "num_succeeded"),
    ("num_failed", "num_failed"),
    ("num_skipped", "num_skipped"),
    ("num_errors", "num_errors"),
)


def add_arguments(run: argparse.ArgumentParser) -> None:
    """The options of ``loyalkit attack run``."""
    run.add_argument("--model", type=Path, required=True, metavar="DIR", help="saved classifier")
    run.add_argument(
        "--data", type=Path, required=True, metavar="FILE", help="TSV, CSV, JSON or JSONL file"
    )
    run.add_argument("--text-column", default="sentence", metavar="C")
    run.add_argument("--text-pair-column", metavar="C2", help="second text of sentence pairs")
    run.add_argument("--label-column", default="label", metavar="L")
    run.add_argument("--recipe", default="deepwordbug", metavar="NAME")
    run.add_argument("--examples", type=int, default=100, metavar="N")
    run.add_argument("--seed", type=int, default=0, metavar="S")
    run.add_argument("--query-budget", type=int, metavar="Q", help="most queries per example")
    run.add_argument("--time-budget", type=float, metavar="SECONDS", help="most seconds in all")
    run.add_argument("--batch-size", type=int, default=32, metavar="B")
    run.add_argument("--nltk-data", type=Path, metavar="DIR", help="from `prepare-data`")
    run.add_argument("--cache-dir", type=Path, metavar="DIR", help="TextAttack's cache folder")
    run.add_argument("--synonyms", type=Path, metavar="FILE", help="for textfooler-offline")
    run.add_argument(
        "--sentence-encoder",
        metavar="NAME|DIR",
        help="textfooler-offline's: use (the default), minilm, or a local encoder folder",
    )
    run.add_argument("--output", type=Path, required=True, metavar="OUT.json")


def _label_names(model: Any) -> tuple[str, ...] | None:
    label2id = getattr(model.config, "label2id", None) or {}
    names = sorted(label2id, key=lambda name: label2id[name])
    if not names or all(name.startswith("LABEL_") for name in names):
        return None
    return tuple(names)


def run(args: argparse.Namespace) -> int:
    """Run ``loyalkit attack run``."""
    from dataclasses import replace

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from loyalkit.robustness.attack_runner import AttackConfig, sample_rows
    from loyalkit.robustness.isolated import AttackWorker
    from loyalkit.robustness.resource_check import check_resources
    from loyalkit.robustness.textattack_setup import OfflineResources
    from loyalkit.study.task_data import TaskConfig, load_task

    if not (args.model / "config.json").is_file():
        raise ValueError(f"--model {str(args.model)!r} holds no saved model (config.json)")
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    columns = (args.text_column,) + ((args.text_pair_column,) if args.text_pair_column else ())
    task = load_task(
        TaskConfig(
            train_file=args.data,
            validation_file=args.data,
            text_columns=columns,
            label_column=args.label_column,
            label_names=_label_names(model),
        )
    )
    resources = OfflineResources.default()
    resources = replace(
        resources,
        nltk_data=args.nltk_data or resources.nltk_data,
        cache_dir=args.cache_dir or resources.cache_dir,
        synonyms=args.synonyms,
        sentence_encoder=args.sentence_encoder,
    )
    check_resources(args.recipe, resources, who="loyalkit attack run")
    config = AttackConfig(
        recipe=args.recipe,
        num_examples=args.examples,
        seed=args.seed,
        query_budget=args.query_budget,
        time_budget_s=args.time_budget,
        batch_size=args.batch_size,
        resources=resources,
    )
    rows = sample_rows(
        task.validation, config.num_examples, config.seed, columns, task.label_column
    )
    with AttackWorker() as worker:
        report = worker.attack(model, tokenizer, rows, config, columns)
    summary = {name: report.summary[key] for name, key in RESULT_KEYS}
    document = {
        "model": str(args.model),
        "data": str(args.data),
        "recipe": config.recipe,
        "seed": config.seed,
        "text_columns": list(columns),
        "stop_reason": report.stop_reason,
        "elapsed_s": report.elapsed_s,
        **summary,
        "examples": report.examples,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(document, indent=1, ensure_ascii=False), encoding="utf-8")
    print(f"{config.recipe} on {len(rows)} rows of {args.data} (seed {config.seed}):")
    print("| measure | value |\n|---|---|")
    for name, value in summary.items():
        shown = "nan" if isinstance(value, float) and math.isnan(value) else f"{value:.4g}"
        print(f"| {name} | {shown} |")
    if report.stop_reason:
        print(f"stopped: {report.stop_reason}")
    print(f"per-example records: {args.output}")
    return 0
