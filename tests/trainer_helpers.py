"""Scaffolding for the tests that run callbacks in a real ``transformers.Trainer`` on tiny BERTs.

Short, deterministic CPU runs (:func:`training_args`, :func:`checkpointed_training_args`) of a
:func:`plain_trainer` over :func:`sentiment_data`, fixed probe sentences (:func:`probe_batch`) and a
callback that records what later assertions compare (:class:`TrainingRecorder`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tiny_bert import tiny_sentiment_dataset, tiny_tokenizer
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments

PROBE_TEXTS = ["the movie was good", "a boring and awful film", "great acting , bad ending"]


def sentiment_data(tokenizer_folder: Path) -> tuple[Any, Any]:
    """``(tokenizer, dataset)``: the tiny tokenizer and 48 tokenized sentiment examples (seed 0)."""
    tokenizer = tiny_tokenizer(tokenizer_folder)
    return tokenizer, tiny_sentiment_dataset(tokenizer, n=48, seed=0)


def plain_trainer(
    data: tuple[Any, Any],
    model: nn.Module,
    args: TrainingArguments,
    callbacks: list[TrainerCallback],
    **kwargs: Any,
) -> Trainer:
    """An unchanged ``Trainer`` training ``model`` on ``data`` (from :func:`sentiment_data`)."""
    tokenizer, dataset = data
    return Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        **kwargs,
    )


def training_args(output_dir: Path, **overrides: Any) -> TrainingArguments:
    """Four steps of batch 8 at a constant 5e-3 on CPU, a log every step, no checkpoints, seed 0."""
    settings: dict[str, Any] = dict(
        output_dir=str(output_dir),
        max_steps=4,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
        save_strategy="no",
        logging_steps=1,
        seed=0,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    settings.update(overrides)
    return TrainingArguments(**settings)


def checkpointed_training_args(output_dir: Path, **overrides: Any) -> TrainingArguments:
    """:func:`training_args` over six steps with a checkpoint every three, for save/resume tests."""
    settings: dict[str, Any] = dict(max_steps=6, save_strategy="steps", save_steps=3, data_seed=0)
    settings.update(overrides)
    return training_args(output_dir, **settings)


def probe_batch(tokenizer: Any) -> dict[str, torch.Tensor]:
    """:data:`PROBE_TEXTS`, tokenized and padded into one batch."""
    return dict(tokenizer(PROBE_TEXTS, padding=True, return_tensors="pt"))


class TrainingRecorder(TrainerCallback):
    """Records the logs each ``on_log`` sees and the logits of ``probe_inputs`` at every save.

    List it after the callback under test to see what that callback left; subclasses add the
    events their test needs.
    """

    def __init__(self, probe_inputs: dict[str, torch.Tensor]) -> None:
        self.probe_inputs = probe_inputs
        self.logs_seen: list[dict[str, float]] = []
        self.saved: dict[int, torch.Tensor] = {}

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
        self.logs_seen.append(dict(logs))

    def on_save(self, args, state, control, model=None, **kwargs):  # type: ignore[no-untyped-def]
        was_training = model.training
        model.eval()
        with torch.no_grad():
            self.saved[state.global_step] = model(**self.probe_inputs).logits.clone()
        model.train(was_training)
