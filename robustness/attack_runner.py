"""Attack a classifier on a seeded sample of a dataset and summarise the outcome.

:func:`attack_model` draws ``config.num_examples`` rows with
``numpy.random.default_rng(config.seed).permutation(len(dataset))`` (the first ``num_examples``
indices, in that order: the same seed gives the same rows, and a smaller sample is a prefix of a
larger one), builds the attack with ``loyalkit.robustness.recipes.build_attack`` on a
:func:`~loyalkit.robustness.model_wrapper.wrap_model` wrapper, seeds TextAttack the way its
``Attacker`` does (``textattack.shared.utils.set_seed(seed)`` once, then the examples in order) and
calls ``attack.attack(example, label)`` per example, so that:

- an example whose attack raises is recorded with ``status="error"`` and its message, and the
  others go on;
- ``config.query_budget`` is TextAttack's per-example query budget (``AttackArgs.query_budget``):
  an example that spends it without success counts as failed;
- ``config.time_budget_s`` bounds the whole run: no example starts after it, and the example in
  progress when it runs out is abandoned (not counted); ``summary["num_attacked"]`` says how many
  were attacked and ``report.stop_reason`` is ``"time_budget"``;
- the global random states (``random``, NumPy, torch) are restored afterwards, so a training run
  that attacks its model keeps its own random stream.

The summary follows TextAttack's own metrics (``AttackSuccessRate``, ``WordsPerturbed``,
``AttackQueries``), as fractions in [0, 1] instead of rounded percentages, over the attacked
examples (errors excluded): ``original_accuracy`` = (succeeded + failed) / attacked (skipped
examples were already misclassified), ``after_attack_accuracy`` = failed / attacked,
``attack_success_rate`` = succeeded / (succeeded + failed), ``mean_queries`` over the examples not
skipped, ``mean_words_perturbed`` = mean share of words changed over the successful attacks. A
rate or mean over no examples is NaN, as in TextAttack's metrics: an attack that attacked nothing
(time budget spent before the first example, every example errored) reports NaN, never 0.0 (which
would read as a broken model), with ``num_attacked`` = 0 and ``report.stop_reason`` saying why
(``"time_budget"``, ``"every_example_errored"``).

Example:
    >>> from loyalkit.robustness.attack_runner import AttackConfig, attack_model
    >>> config = AttackConfig(recipe="deepwordbug", num_examples=50, seed=0, query_budget=200)
    >>> # report = attack_model(model, tokenizer, dev_set, config, text_columns=("sentence",))
    >>> # report.summary["after_attack_accuracy"]; report.save("adversarial.csv")
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from loyalkit.robustness.model_wrapper import TimeBudgetExceeded, wrap_model

if TYPE_CHECKING:
    from loyalkit.robustness.textattack_setup import OfflineResources

__all__ = [
    "EXAMPLE_FIELDS",
    "SUMMARY_KEYS",
    "AttackConfig",
    "AttackReport",
    "attack_model",
    "build_model_attack",
    "configure_attack",
    "run_attack",
    "sample_rows",
    "summarize",
]

SUMMARY_KEYS: tuple[str, ...] = (
    "original_accuracy",
    "after_attack_accuracy",
    "attack_success_rate",
    "mean_queries",
    "mean_words_perturbed",
    "num_succeeded",
    "num_failed",
    "num_skipped",
    "num_errors",
    "num_attacked",
    "num_requested",
)
EXAMPLE_FIELDS: tuple[str, ...] = (
    "index",
    "original_text",
    "perturbed_text",
    "ground_truth",
    "original_label",
    "perturbed_label",
    "status",
    "queries",
    "words_perturbed",
    "num_words",
    "error",
)


@dataclass(frozen=True)
class AttackConfig:
    """What to attack and how.

    Args:
        recipe: a name ``loyalkit.robustness.recipes.build_attack`` knows (``"textfooler-offline"``,
            ``"deepwordbug"``, TextAttack's own recipe names...).
        num_examples: how many rows to sample (all rows if the dataset is smaller).
        seed: seeds the sample and TextAttack's random draws.
        query_budget: the most model queries per example (TextAttack's ``query_budget``).
        time_budget_s: the most seconds for the whole run.
        batch_size: the most queries per forward pass.
        resources: where TextAttack's offline data lies (``None``: the documented defaults).
        seed_each_example: seed TextAttack's random draws with ``seed`` again before each
            example (default: once, as TextAttack's ``Attacker`` does). Each example's outcome
            then does not depend on which examples came before it, so the rows can be split
            across processes (``AttackCallback`` under ``torchrun``) with the same outcomes.
    """

    recipe: str = "textfooler-offline"
    num_examples: int = 100
    seed: int = 0
    query_budget: int | None = None
    time_budget_s: float | None = None
    batch_size: int = 32
    resources: OfflineResources | None = None
    seed_each_example: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.seed_each_example, bool):
            raise ValueError(f"`seed_each_example` must be a bool, got {self.seed_each_example!r}")
        if not isinstance(self.recipe, str) or not self.recipe:
            raise ValueError(f"`recipe` must be a recipe name, got {self.recipe!r}")
        for name in ("num_examples", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"`seed` must be a non-negative int, got {self.seed!r}")
        budget = self.query_budget
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int) or budget < 1
        ):
            raise ValueError(f"`query_budget` must be a positive int or None, got {budget!r}")
        seconds = self.time_budget_s
        if seconds is not None and (
            isinstance(seconds, bool)
            or not isinstance(seconds, (int, float))
            or not seconds > 0
            or math.isinf(seconds)
        ):
            raise ValueError(
                f"`time_budget_s` must be a positive number of seconds or None, got {seconds!r}"
            )


@dataclass
class AttackReport:
    """The outcome of an attack: ``summary`` (keys :data:`SUMMARY_KEYS`) and one dict per example
    (keys :data:`EXAMPLE_FIELDS`; sentence pairs are joined with a line break, as TextAttack does).
    ``stop_reason`` is ``"time_budget"`` when the time budget ended the run early and
    ``"every_example_errored"`` when no example could be attacked."""

    summary: dict[str, float | int]
    examples: list[dict[str, Any]]
    recipe: str = ""
    text_columns: tuple[str, ...] = ("sentence",)
    seed: int = 0
    stop_reason: str | None = None
    elapsed_s: float = 0.0
    results: list[Any] = field(default_factory=list, repr=False, compare=False)
    """TextAttack's ``AttackResult`` objects of the attacked examples (not saved)."""

    def to_metrics(self, prefix: str = "attack_") -> dict[str, float]:
        """The summary as floats with ``prefix`` on each key, for Trainer metrics and logs."""
        return {f"{prefix}{key}": float(self.summary[key]) for key in SUMMARY_KEYS}

    def save(self, path: str | Path) -> Path:
        """Write the examples to ``path``: ``.csv`` (one row per example) or ``.json`` (summary,
        settings and examples). Returns the path."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".csv", ".json"):
            raise ValueError(f"`path` must end in .csv or .json, got {str(path)!r}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".csv":
            with path.open("w", newline="", encoding="utf-8") as out:
                writer = csv.DictWriter(out, fieldnames=EXAMPLE_FIELDS)
                writer.writeheader()
                for example in self.examples:
                    writer.writerow({key: example.get(key) for key in EXAMPLE_FIELDS})
        else:
            document = {
                "recipe": self.recipe,
                "text_columns": list(self.text_columns),
                "seed": self.seed,
                "stop_reason": self.stop_reason,
                "elapsed_s": self.elapsed_s,
                "summary": self.summary,
                "examples": self.examples,
            }
            path.write_text(json.dumps(document, indent=1, ensure_ascii=False), encoding="utf-8")
        return path


def sample_rows(
    dataset: Any,
    num_examples: int,
    seed: int,
    text_columns: Sequence[str] = ("sentence",),
    label_column: str = "label",
) -> list[tuple[int, tuple[str, ...], int]]:
    """``(index, texts, label)`` of the first ``num_examples`` indices of
    ``numpy.random.default_rng(seed).permutation(len(dataset))``.

    ``dataset``: a ``datasets.Dataset`` or a sequence of dicts holding ``text_columns`` (strings)
    and ``label_column`` (an int class id).
    """
    text_columns = _check_columns(text_columns, label_column)
    if isinstance(dataset, (str, bytes, Mapping)) or not hasattr(dataset, "__getitem__"):
        raise TypeError(
            "`dataset` must be a datasets.Dataset or a sequence of dicts, got "
            f"{type(dataset).__name__}"
        )
    names = getattr(dataset, "column_names", None)
    if isinstance(names, list):
        missing = [c for c in (*text_columns, label_column) if c not in names]
        if missing:
            raise ValueError(f"`dataset` has no column(s) {missing}; it has {names}")
    order = np.random.default_rng(seed).permutation(len(dataset))[:num_examples]
    rows = []
    for index in order.tolist():
        row = dataset[index]
        if not isinstance(row, Mapping):
            raise TypeError(f"`dataset` rows must be dicts, got {type(row).__name__}")
        missing = [c for c in (*text_columns, label_column) if c not in row]
        if missing:
            raise ValueError(f"`dataset` row {index} has no column(s) {missing}")
        texts = tuple(row[c] for c in text_columns)
        if not all(isinstance(t, str) for t in texts):
            raise ValueError(f"`dataset` row {index}: {list(text_columns)} must hold strings")
        if len(texts) > 1 and any("\n" in t for t in texts):
            raise ValueError(
                f"`dataset` row {index}: a text of a multi-column input holds a line break, "
                "which TextAttack uses to join the columns"
            )
        label = row[label_column]
        if isinstance(label, torch.Tensor):
            label = label.item()
        if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
            raise ValueError(
                f"`dataset` row {index}: `{label_column}` must be an int class id, got {label!r}"
            )
        if int(label) < 0:
            raise ValueError(
                f"`dataset` row {index}: `{label_column}` is {int(label)} (unlabelled rows "
                "cannot be attacked)"
            )
        rows.append((int(index), texts, int(label)))
    return rows


def build_model_attack(model: nn.Module, tokenizer: Any, config: AttackConfig) -> Any:
    """The ``textattack.Attack`` of ``config.recipe`` on a dynamically padded wrapper of
    ``model``, with ``config``'s query budget and batch size."""
    wrapper = wrap_model(model, tokenizer, config.batch_size, resources=config.resources)
    return configure_attack(wrapper, config)


def configure_attack(model_wrapper: Any, config: AttackConfig) -> Any:
    """The ``textattack.Attack`` of ``config.recipe`` on any TextAttack ``model_wrapper``, with
    ``config``'s query budget and batch size (the isolated worker passes its remote wrapper)."""
    from loyalkit.robustness.recipes import build_attack

    wrapper = model_wrapper
    attack = build_attack(config.recipe, wrapper, config.resources)
    attack.goal_function.batch_size = config.batch_size
    if config.query_budget is not None:
        attack.goal_function.query_budget = config.query_budget
    return attack


@contextlib.contextmanager
def _kept_random_state() -> Iterator[None]:
    states = (random.getstate(), np.random.get_state(), torch.get_rng_state())
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def run_attack(
    attack: Any,
    rows: Sequence[tuple[int, tuple[str, ...], int]],
    config: AttackConfig,
    text_columns: Sequence[str] = ("sentence",),
    *,
    clock: Callable[[], float] = time.monotonic,
    on_example: Callable[[int], None] | None = None,
) -> AttackReport:
    """Attack ``rows`` (from :func:`sample_rows`) with a built ``attack`` (see the module doc).

    ``clock`` measures the time budget (seconds; tests pass a deterministic one);
    ``on_example(done)`` is called after each example (progress)."""
    from loyalkit.robustness.textattack_setup import import_textattack

    textattack = import_textattack(config.resources)
    from textattack.attack_results import (
        FailedAttackResult,
        SkippedAttackResult,
        SuccessfulAttackResult,
    )

    wrapper = attack.goal_function.model
    start = clock()
    deadline = None if config.time_budget_s is None else start + config.time_budget_s
    examples: list[dict[str, Any]] = []
    results: list[Any] = []
    stop_reason = None
    with _kept_random_state():
        textattack.shared.utils.set_seed(config.seed)
        for index, texts, label in rows:
            if deadline is not None and clock() > deadline:
                stop_reason = "time_budget"
                break
            if hasattr(wrapper, "deadline"):
                wrapper.deadline, wrapper.clock = deadline, clock
            if config.seed_each_example:
                textattack.shared.utils.set_seed(config.seed)
            example: Any = (
                texts[0] if len(texts) == 1 else OrderedDict(zip(text_columns, texts, strict=True))
            )
            try:
                result = attack.attack(example, label)
            except TimeBudgetExceeded:
                stop_reason = "time_budget"
                break
            except Exception as error:  # one example's failure must not end the run
                examples.append(_error_example(index, texts, label, error))
                if on_example is not None:
                    on_example(len(examples))
                continue
            finally:
                if hasattr(wrapper, "deadline"):
                    wrapper.deadline = None
            status = (
                "succeeded"
                if isinstance(result, SuccessfulAttackResult)
                else "skipped"
                if isinstance(result, SkippedAttackResult)
                else "failed"
                if isinstance(result, FailedAttackResult)
                else "other"
            )
            results.append(result)
            examples.append(_result_example(index, label, result, status))
            if on_example is not None:
                on_example(len(examples))
    summary = summarize(examples, len(rows))
    if stop_reason is None and rows and summary["num_attacked"] == 0:
        stop_reason = "every_example_errored"
    return AttackReport(
        summary=summary,
        examples=examples,
        recipe=config.recipe,
        text_columns=tuple(text_columns),
        seed=config.seed,
        stop_reason=stop_reason,
        elapsed_s=clock() - start,
        results=results,
    )


def attack_model(
    model: nn.Module,
    tokenizer: Any,
    dataset: Any,
    config: AttackConfig | None = None,
    *,
    text_columns: Sequence[str] = ("sentence",),
    label_column: str = "label",
    worker: Any = None,
    progress: Callable[[int, int], None] | None = None,
) -> AttackReport:
    """Attack ``model`` on a seeded sample of ``dataset`` (see the module docstring).

    Where TextAttack runs: in this process when it can (installed beside transformers < 5), else
    (or when ``worker`` is given) in its isolated environment through ``worker``, an
    :class:`~loyalkit.robustness.isolated.AttackWorker` (default: a temporary one). Both give
    the same numbers (``tests/test_isolated_parity.py``).

    Args:
        model: a Hugging Face sequence classifier; it is queried in eval mode, its mode is kept.
        tokenizer: its tokenizer.
        dataset: a ``datasets.Dataset`` or a sequence of dicts with raw text and int labels.
        config: recipe, sample size, seed, budgets (default: ``AttackConfig()``).
        text_columns: one column (single sentences) or two (sentence pairs).
        label_column: the gold label column (class ids).
        worker: the isolated worker to attack through (see above).
        progress: called as ``progress(done, sampled)``: with ``done = 0`` before the first
            example, then once after each one (a progress bar).
    """
    config = AttackConfig() if config is None else config
    if not isinstance(config, AttackConfig):
        raise TypeError(f"`config` must be an AttackConfig, got {type(config).__name__}")
    rows = sample_rows(dataset, config.num_examples, config.seed, text_columns, label_column)
    on_example = None if progress is None else _Progress(progress, len(rows))
    from loyalkit.robustness.textattack_setup import textattack_runs_here

    if worker is not None or not textattack_runs_here():
        from loyalkit.robustness.isolated import AttackWorker

        if worker is not None:
            return worker.attack(
                model, tokenizer, rows, config, text_columns, on_example=on_example
            )
        with AttackWorker() as temporary:
            return temporary.attack(
                model, tokenizer, rows, config, text_columns, on_example=on_example
            )
    attack = build_model_attack(model, tokenizer, config)
    return run_attack(attack, rows, config, text_columns, on_example=on_example)


class _Progress:
    """``on_example(done)`` over a ``progress(done, sampled)`` hook: called with 0 at once, then
    once per finished example (the worker also reports 0 when its recipe is built)."""

    def __init__(self, hook: Callable[[int, int], None], sampled: int) -> None:
        self.hook, self.sampled, self.done = hook, sampled, 0
        hook(0, sampled)

    def __call__(self, done: int) -> None:
        if done > self.done:
            self.done = done
            self.hook(done, self.sampled)


def _check_columns(text_columns: Sequence[str], label_column: str) -> tuple[str, ...]:
    if isinstance(text_columns, str) or not all(isinstance(c, str) for c in text_columns):
        raise TypeError(f"`text_columns` must be a sequence of column names, got {text_columns!r}")
    if not 1 <= len(text_columns) <= 2:
        raise ValueError(
            f"`text_columns` must name 1 column (sentences) or 2 (sentence pairs), got "
            f"{list(text_columns)}"
        )
    if not isinstance(label_column, str):
        raise TypeError(f"`label_column` must be a column name, got {label_column!r}")
    return tuple(text_columns)


def _error_example(
    index: int, texts: tuple[str, ...], label: int, error: BaseException
) -> dict[str, Any]:
    message = "".join(traceback.format_exception_only(type(error), error)).strip()
    return {
        "index": index,
        "original_text": "\n".join(texts),
        "perturbed_text": None,
        "ground_truth": label,
        "original_label": None,
        "perturbed_label": None,
        "status": "error",
        "queries": None,
        "words_perturbed": None,
        "num_words": None,
        "error": message,
    }


def _result_example(index: int, label: int, result: Any, status: str) -> dict[str, Any]:
    original = result.original_result.attacked_text
    perturbed = result.perturbed_result.attacked_text
    changed = 0 if status == "skipped" else len(original.all_words_diff(perturbed))
    return {
        "index": index,
        "original_text": original.text,
        "perturbed_text": perturbed.text,
        "ground_truth": label,
        "original_label": _label(result.original_result.output),
        "perturbed_label": _label(result.perturbed_result.output),
        "status": status,
        "queries": int(result.num_queries),
        "words_perturbed": changed,
        "num_words": len(original.words),
        "error": None,
    }


def _label(output: Any) -> Any:
    return int(output) if isinstance(output, (int, np.integer)) else output


def summarize(examples: list[dict[str, Any]], num_requested: int) -> dict[str, float | int]:
    """TextAttack's AttackSuccessRate, WordsPerturbed and AttackQueries, as fractions, over the
    per-example records (NaN where a rate or mean has no example)."""
    count = {
        s: sum(e["status"] == s for e in examples)
        for s in ("succeeded", "failed", "skipped", "error")
    }
    attacked = count["succeeded"] + count["failed"] + count["skipped"]
    tried = count["succeeded"] + count["failed"]
    queries = [e["queries"] for e in examples if e["status"] in ("succeeded", "failed")]
    shares = [
        e["words_perturbed"] / e["num_words"]
        for e in examples
        if e["status"] == "succeeded" and e["num_words"] and e["words_perturbed"]
    ]
    nan = math.nan
    return {
        "original_accuracy": tried / attacked if attacked else nan,
        "after_attack_accuracy": count["failed"] / attacked if attacked else nan,
        "attack_success_rate": count["succeeded"] / tried if tried else nan,
        "mean_queries": float(np.mean(queries)) if queries else nan,
        "mean_words_perturbed": float(np.mean(shares)) if shares else nan,
        "num_succeeded": count["succeeded"],
        "num_failed": count["failed"],
        "num_skipped": count["skipped"],
        "num_errors": count["error"],
        "num_attacked": attacked,
        "num_requested": num_requested,
    }
