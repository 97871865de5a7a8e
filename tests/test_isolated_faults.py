"""Faults of the isolated attack worker never stop training, and no worker outlives its user.

A worker killed mid-attack (crash), stopped (hang, caught by the time-out) or absent (no
environment built) gives NaN attack values with the reason logged while training goes on; an
attack that attacked nothing reports NaN (never 0.0) with ``num_attacked`` and the stop reason in
the logs; the worker is gone after training ends, after Ctrl-C in the user's process, and after
that process is killed with SIGKILL.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from attack_helpers import QueryHook, RaisesOnToken, classifier_setup, raw_dataset
from torch import nn
from trainer_helpers import training_args
from transformers import BertForSequenceClassification, Trainer, TrainerCallback

from loyalkit.callbacks import AttackCallback
from loyalkit.robustness.attack_runner import SUMMARY_KEYS
from loyalkit.robustness.isolated import AttackWorker

PARENT = Path(__file__).resolve().parent / "isolated_parent.py"
RATES = (
    "original_accuracy",
    "after_attack_accuracy",
    "attack_success_rate",
    "mean_queries",
    "mean_words_perturbed",
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    loaded = classifier_setup(tmp_path_factory, steps=10)
    tokenizer = loaded["tokenizer"]
    return {**loaded, "train": raw_dataset(48, 0, tokenizer), "eval": raw_dataset(30, 1, tokenizer)}


def gone(pid: int, timeout_s: float = 15.0) -> bool:
    """Whether process ``pid`` has ended (a zombie awaiting its reaper counts) within the time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.1)
    return False


class OnFirstAttackQuery(QueryHook):
    """The classifier; the first time it is queried while the callback's worker runs, ``act``
    is called with the worker's pid (to kill or stop it)."""

    def __init__(self, model: nn.Module, callback: AttackCallback, act: Any) -> None:
        super().__init__(model)
        self.callback, self.act = callback, act
        self.acted: list[int] = []

    def before_query(self, input_ids: torch.Tensor) -> None:
        pid = self.callback.worker.pid
        if pid is not None and not self.acted:
            self.acted.append(pid)
            self.act(pid)


def train_with(
    setup: dict[str, Any], tmp_path: Path, callback: AttackCallback, act: Any = None
) -> tuple[Trainer, Any]:
    model: nn.Module = BertForSequenceClassification.from_pretrained(setup["folder"])
    if act is not None:
        model = OnFirstAttackQuery(model, callback, act)
    training = training_args(
        tmp_path, max_steps=2, learning_rate=1e-3, eval_strategy="steps", eval_steps=1
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=setup["train"],
        eval_dataset=setup["eval"],
        processing_class=setup["tokenizer"],
    )
    callback.attach(trainer)
    trainer.train()
    logged = [log for log in trainer.state.log_history if "eval_attack_num_attacked" in log]
    return trainer, logged


def deepwordbug(setup: dict[str, Any], **options: Any) -> AttackCallback:
    return AttackCallback(
        "deepwordbug", num_examples=6, seed=0, resources=setup["resources"], **options
    )


def test_a_crashed_worker_gives_nan_then_a_fresh_worker_attacks(
    setup: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callback = deepwordbug(setup)
    with caplog.at_level(logging.ERROR):
        trainer, logged = train_with(
            setup, tmp_path, callback, lambda pid: os.kill(pid, signal.SIGKILL)
        )
    assert trainer.state.global_step == 2 and len(logged) == 2
    assert all(math.isnan(logged[0][f"eval_attack_{key}"]) for key in SUMMARY_KEYS)
    assert "worker died" in caplog.text
    assert logged[1]["eval_attack_num_attacked"] == 6  # the second evaluation: a new worker
    assert callback.worker.starts == 2 and len(callback.failures) == 1


def test_a_hung_worker_is_killed_after_the_time_out(
    setup: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    callback = deepwordbug(setup, worker_timeout_s=5.0)
    stopped: list[int] = []

    def stop(pid: int) -> None:
        stopped.append(pid)
        os.kill(pid, signal.SIGSTOP)

    with caplog.at_level(logging.ERROR):
        trainer, logged = train_with(setup, tmp_path, callback, stop)
    assert trainer.state.global_step == 2
    assert math.isnan(logged[0]["eval_attack_after_attack_accuracy"])
    assert "hung" in caplog.text and "5 s" in caplog.text
    assert gone(stopped[0])
    assert logged[1]["eval_attack_num_attacked"] == 6


def test_a_missing_environment_gives_nan_and_says_how_to_build_it(
    setup: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    worker = AttackWorker(env_dir=tmp_path / "never-built")
    callback = deepwordbug(setup, worker=worker)
    with caplog.at_level(logging.WARNING):
        trainer, logged = train_with(setup, tmp_path / "run", callback)
    assert trainer.state.global_step == 2 and len(logged) == 2
    assert all(math.isnan(log[f"eval_attack_{key}"]) for log in logged for key in SUMMARY_KEYS)
    assert "loyalkit attack setup" in caplog.text
    assert 'pip install "loyalkit[attack]" "transformers<5"' not in caplog.text


def test_an_attack_of_nothing_is_nan_not_zero(
    setup: dict[str, Any], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Every example errors: the model refuses every text holding "the", and every row has it.
    rows = [{"sentence": row["sentence"] + " the", "label": row["label"]} for row in setup["eval"]]
    callback = deepwordbug(setup, dataset=rows)
    the = setup["tokenizer"].convert_tokens_to_ids("the")

    base = BertForSequenceClassification.from_pretrained(setup["folder"])
    clean = setup["eval"].filter(lambda row: "the" not in row["sentence"].split())
    trainer = Trainer(
        model=RaisesOnToken(base, the),
        args=training_args(tmp_path, max_steps=1, learning_rate=1e-3),
        train_dataset=setup["train"],
        eval_dataset=clean,
        processing_class=setup["tokenizer"],
    )
    callback.attach(trainer)
    with caplog.at_level(logging.WARNING):
        metrics = trainer.evaluate()
    assert metrics["eval_attack_num_attacked"] == 0 and metrics["eval_attack_num_errors"] == 6
    assert all(math.isnan(metrics[f"eval_attack_{key}"]) for key in RATES)
    assert "num_attacked=0" in caplog.text and "every_example_errored" in caplog.text
    assert callback.last_report is not None
    assert callback.last_report.stop_reason == "every_example_errored"

    # The time budget spent before the first example: the same, with its own reason.
    budget = deepwordbug(setup, time_budget_s=1e-9)
    trainer.callback_handler.callbacks.remove(callback)
    callback.close()
    budget.attach(trainer)
    metrics = trainer.evaluate()
    assert metrics["eval_attack_num_attacked"] == 0
    assert all(math.isnan(metrics[f"eval_attack_{key}"]) for key in RATES)
    assert "time_budget" in caplog.text
    budget.close()


def test_no_worker_after_training_ends(setup: dict[str, Any], tmp_path: Path) -> None:
    callback = deepwordbug(setup)
    seen: list[int] = []

    class RecordWorker(TrainerCallback):
        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            if callback.worker.pid is not None:
                seen.append(callback.worker.pid)

    model = BertForSequenceClassification.from_pretrained(setup["folder"])
    trainer = Trainer(
        model=model,
        args=training_args(
            tmp_path, max_steps=2, learning_rate=1e-3, eval_strategy="steps", eval_steps=1
        ),
        train_dataset=setup["train"],
        eval_dataset=setup["eval"],
        processing_class=setup["tokenizer"],
        callbacks=[RecordWorker()],
    )
    callback.attach(trainer)
    trainer.train()
    assert seen  # a worker ran during training
    assert callback.worker.pid is None and gone(seen[-1])


def start_parent(setup: dict[str, Any]) -> tuple[subprocess.Popen[str], int]:
    """``isolated_parent.py`` in its own session (a terminal's process group), and its worker."""
    resources = setup["resources"]
    process = subprocess.Popen(
        [sys.executable, str(PARENT), str(setup["folder"]), str(resources.nltk_data.parent)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("worker "), line + (process.stderr.read() if process.stderr else "")
    worker = int(line.split()[1])
    assert process.stdout.readline().startswith("done")  # a job is running
    return process, worker


def test_no_worker_after_ctrl_c(setup: dict[str, Any]) -> None:
    process, worker = start_parent(setup)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group
    _out, err = process.communicate(timeout=60)
    assert process.returncode != 0 and "KeyboardInterrupt" in err
    assert gone(worker)


def test_no_worker_after_the_parent_is_killed(setup: dict[str, Any]) -> None:
    process, worker = start_parent(setup)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert gone(worker)
