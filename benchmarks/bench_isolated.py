"""Attack throughput: TextAttack in this process vs the isolated worker (``AttackWorker``).

Run in the CI-only compat environment, where TextAttack can also run in-process, so that both
paths attack the same model object on the same transformers::

    LOYALKIT_ATTACK_ENV=.venv-attack .venv-compat/bin/python benchmarks/bench_isolated.py

(in the main environment only the isolated path runs and is printed). The victim is the MiniLM-L6
teacher of ``bench_attack.py`` (fine-tuned on the first ``--train-size`` SST-2 sentences, cached).
Both paths attack the same ``--examples`` SST-2 dev sentences with the same recipe and seed, after
an untimed warm-up on two other sentences (worker start, TextAttack's import, the recipe's lazy
loads); before each timed run only the model-output cache is cleared, as the worker does between
jobs. The two paths alternate ``--repeats`` times; the best time of each is kept (the cores are
shared). Printed: examples per second, isolated / in-process time, identical outcomes (status,
perturbed text, query count) per example.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from bench_attack import offline_resources, teacher
from sst2 import sst2_rows


def outcome(example: dict[str, Any]) -> tuple[Any, ...]:
    return example["status"], example["perturbed_text"], example["queries"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipes", nargs="+", default=["deepwordbug", "textfooler-offline"])
    parser.add_argument("--examples", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "loyalkit" / "bench")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from loyalkit.robustness.attack_runner import (
        AttackConfig,
        build_model_attack,
        run_attack,
        sample_rows,
    )
    from loyalkit.robustness.isolated import AttackWorker
    from loyalkit.robustness.textattack_setup import textattack_runs_here

    resources = offline_resources(args.cache)
    folder = teacher(args.cache, args.train_size)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    dev = sst2_rows("dev", strip=True)
    in_process = textattack_runs_here()
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__} in this process, {os.cpu_count()} cores, torch threads "
        f"{torch.get_num_threads()}, {args.examples} SST-2 dev sentences, best of {args.repeats}\n"
    )
    print("| recipe | in-process ex/s | isolated ex/s | isolated / in-process time | identical |")
    print("|---|---|---|---|---|")
    with AttackWorker() as worker:
        for recipe in args.recipes:
            config = AttackConfig(
                recipe=recipe, num_examples=args.examples, seed=0, resources=resources
            )
            rows = sample_rows(dev, args.examples, 0)
            warm_up = [row for row in sample_rows(dev, args.examples + 2, 1) if row not in rows][:2]
            worker.attack(model, tokenizer, warm_up, config)
            local = None
            if in_process:
                local = build_model_attack(model, tokenizer, config)
                run_attack(local, warm_up, config)
            best: dict[str, float] = {"in": float("inf"), "iso": float("inf")}
            reports: dict[str, Any] = {}
            for _ in range(args.repeats):
                if local is not None:
                    local.goal_function.clear_cache()
                    start = time.perf_counter()
                    reports["in"] = run_attack(local, rows, config)
                    best["in"] = min(best["in"], time.perf_counter() - start)
                start = time.perf_counter()
                reports["iso"] = worker.attack(model, tokenizer, rows, config)
                best["iso"] = min(best["iso"], time.perf_counter() - start)
            n = len(rows)
            if local is not None:
                same = sum(
                    outcome(a) == outcome(b)
                    for a, b in zip(reports["in"].examples, reports["iso"].examples, strict=True)
                )
                print(
                    f"| {recipe} | {n / best['in']:.2f} | {n / best['iso']:.2f} | "
                    f"{best['iso'] / best['in']:.3f}x | {same}/{n} |"
                )
            else:
                print(f"| {recipe} | (not here) | {n / best['iso']:.2f} | | |")


if __name__ == "__main__":
    main()
