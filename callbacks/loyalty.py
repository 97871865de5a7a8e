"""Loyalty to the teacher at every evaluation of a plain ``transformers.Trainer``.

``LoyaltyCallback(teacher).attach(trainer)`` adds ``label_loyalty``, ``probability_loyalty``,
``kl_divergence`` and ``worst_class_label_loyalty`` (plus ``flips``, ``flips_correct_to_incorrect``,
``flips_incorrect_to_correct``, ``student_accuracy`` and ``teacher_accuracy`` from the gold labels)
to every evaluation's metrics, under the evaluation's prefix (``eval_label_loyalty``...).
It may also be listed in ``Trainer(..., callbacks=[...])`` first; ``attach(trainer)`` is still needed,
and a callback that was never attached stops the run at train begin (or at the first evaluation
batch of an ``evaluate()`` without training) saying so.

Why ``attach(trainer)``: the student's eval logits exist only inside the Trainer's evaluation loop,
which hands them, gathered across processes, to ``trainer.compute_metrics``. ``attach`` wraps that
function (keeping the user's own metrics) and registers the callback. A callback cannot do that
itself: its events receive the model, the dataloaders and the metrics dict, never the Trainer, and
``Trainer.evaluate`` logs its metrics before ``on_evaluate`` runs, so values added there would reach
``evaluate()``'s return value and ``metric_for_best_model`` but neither ``state.log_history`` nor
the reporting integrations. The loyalty values are then
part of the metrics the Trainer itself logs, so they reach ``state.log_history``, every reporting
integration, ``evaluate()``'s return value and ``metric_for_best_model`` (e.g.
``metric_for_best_model="label_loyalty"``), with no extra student forward pass and no
``trainer.log`` call of our own. The Trainer calls ``compute_metrics`` only when the evaluation
set has labels, so it must have them; ``batch_eval_metrics`` and ``prediction_loss_only`` are
refused.

The teacher runs once per evaluation set, at its first evaluation, over the very dataloader the
student was evaluated with, gathered with ``accelerator.gather_for_metrics`` like the student's
logits: under ``torchrun`` / ``accelerate launch`` every process sees complete, identically ordered
logits of both models and computes the same values. Later evaluations reuse the teacher's logits;
a set whose size or label order changed in between is refused.

A causal LM (a ``...ForCausalLM`` student) is judged token by token instead: ``attach`` hands the
trainer to :class:`~loyalkit.callbacks.token_loyalty.TokenLoyaltyCallback`, which reports the same
metric names (``eval_label_loyalty``: same top-1 next token, ...) plus ``kl_divergence_p99``,
``delta_p_rms`` and ``ppl_ratio``, without gathering tokens x vocabulary logits.

Example:
    >>> from loyalkit.callbacks import LoyaltyCallback
    >>> # trainer = Trainer(model=student, args=args, train_dataset=train, eval_dataset=dev)
    >>> # LoyaltyCallback(teacher).attach(trainer)
    >>> # trainer.train(); trainer.evaluate()["eval_label_loyalty"]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from transformers import (
    EvalPrediction,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from loyalkit.callbacks.conflicts import Change, conflict
from loyalkit.compression.distillation import check_same_vocabulary, teacher_inputs
from loyalkit.logits import model_device, model_logits
from loyalkit.metrics import loyalty

__all__ = ["LOYALTY_METRICS", "LoyaltyCallback"]

LOYALTY_METRICS: tuple[str, ...] = (
    "label_loyalty",
    "probability_loyalty",
    "kl_divergence",
    "worst_class_label_loyalty",
    "flips",
    "flips_correct_to_incorrect",
    "flips_incorrect_to_correct",
    "student_accuracy",
    "teacher_accuracy",
)


def _as_array(values: Any) -> np.ndarray:
    """The Trainer's gathered outputs: an array, a tuple of arrays (logits first) or batch lists."""
    if isinstance(values, tuple):
        values = values[0]
    if isinstance(values, list):
        values = np.concatenate([np.asarray(v) for v in values])
    return np.asarray(values)


def _groups_by_length(args: TrainingArguments) -> bool:
    # transformers 4.x spells it `group_by_length`, 5.x `train_sampling_strategy`.
    return bool(getattr(args, "group_by_length", False)) or (
        getattr(args, "train_sampling_strategy", None) == "group_by_length"
    )


def _is_causal_lm(model: Any) -> bool:
    """Whether ``model`` is one of transformers' causal-LM classes (``...ForCausalLM``,
    ``GPT2LMHeadModel``, ...), by the auto mapping that ``AutoModelForCausalLM`` itself uses."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return type(model).__name__ in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())


def _num_labels(model: Any) -> int | None:
    config = getattr(model, "config", None)
    return getattr(config, "num_labels", None)


class LoyaltyCallback(TrainerCallback):
    """Teacher-student loyalty metrics at every evaluation (see the module docstring).

    Args:
        teacher: the original classifier; it is put in eval mode on the student's device.
        base: logarithm base of probability loyalty and KL (``None``: natural log; ``2``: [0, 1]).
    """

    def __init__(self, teacher: nn.Module, *, base: float | None = None) -> None:
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"`teacher` must be a torch.nn.Module, got {type(teacher).__name__}")
        self.teacher = teacher
        self.base = base
        self.teacher_passes = 0
        self._trainer: Trainer | None = None
        self._user_compute_metrics: Callable[[EvalPrediction], dict[str, Any]] | None = None
        self._dataloader: Iterable[Any] | None = None
        self._teacher_cache: dict[Any, tuple[np.ndarray, np.ndarray | None]] = {}
        self._computed = False
        self._delegated = False  # a causal LM: TokenLoyaltyCallback reports instead

    def attach(self, trainer: Trainer) -> LoyaltyCallback:
        """Register with ``trainer`` and wrap its ``compute_metrics``; returns the callback.

        For a causal-LM student the token-level callback is registered instead (module docstring).
        A callback already in ``Trainer(..., callbacks=[...])`` is not registered twice.
        """
        if not isinstance(trainer, Trainer):
            raise TypeError(
                f"`trainer` must be a transformers.Trainer, got {type(trainer).__name__}"
            )
        listed = any(cb is self for cb in trainer.callback_handler.callbacks)
        if _is_causal_lm(trainer.model):
            from loyalkit.callbacks.token_loyalty import TokenLoyaltyCallback

            if self.base is not None:
                raise ValueError(
                    "`base` is for classifiers: token-level loyalty of a causal LM is computed "
                    f"in natural log only, got base={self.base!r}"
                )
            if self._trainer is not None:
                raise ValueError("this LoyaltyCallback is already attached to a Trainer")
            TokenLoyaltyCallback(self.teacher)._attach(trainer, on_behalf_of=self)
            self._trainer = trainer
            self._delegated = True
            return self
        if self._trainer is not None:
            raise ValueError("this LoyaltyCallback is already attached to a Trainer")
        for other in trainer.callback_handler.callbacks:
            problem = None if other is self else conflict(other, self, None)
            if problem is not None:
                raise ValueError(problem)
        if trainer.args.batch_eval_metrics:
            raise ValueError(
                "LoyaltyCallback needs the whole evaluation set's logits: "
                "`batch_eval_metrics=True` is not supported"
            )
        if _groups_by_length(trainer.args):
            # The length-grouped eval sampler draws a new order each time it is iterated (4.57:
            # from torch's global RNG), so the teacher's pass could not follow the student's.
            raise ValueError(
                "LoyaltyCallback needs the evaluation set in a fixed order, but length-grouped "
                "sampling (`group_by_length=True` / `train_sampling_strategy='group_by_length'`) "
                "also shuffles evaluation batches: evaluate with a Trainer that does not group by "
                "length"
            )
        if trainer.args.prediction_loss_only:
            raise ValueError(
                "LoyaltyCallback needs the student's eval logits: set `prediction_loss_only=False`"
            )
        check_same_vocabulary(self.teacher, cast(nn.Module, trainer.model))
        student_labels, teacher_labels = _num_labels(trainer.model), _num_labels(self.teacher)
        if None not in (student_labels, teacher_labels) and student_labels != teacher_labels:
            raise ValueError(
                f"`teacher` predicts {teacher_labels} labels but the student (trainer.model) "
                f"predicts {student_labels}"
            )
        self._trainer = trainer
        self._user_compute_metrics = trainer.compute_metrics
        trainer.compute_metrics = self._compute_metrics
        if not listed:
            trainer.add_callback(self)
        return self

    def changes(self) -> tuple[Change, ...]:
        """What this callback modifies (see :mod:`loyalkit.callbacks.conflicts`)."""
        return (Change("metrics", "reports loyalty to the teacher", names=LOYALTY_METRICS),)

    def _require_attached(self) -> None:
        if self._trainer is None:
            raise ValueError(
                "LoyaltyCallback is in the Trainer's callbacks but was never attached: call "
                "`LoyaltyCallback(teacher).attach(trainer)` after building the Trainer (it wraps "
                "trainer.compute_metrics, which reaches the student's gathered eval logits; "
                "`callbacks=[...]` alone cannot)"
            )

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._require_attached()

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._require_attached()  # fail at the first batch, not after the whole evaluation
        # The dataloader the student is being evaluated with: the teacher runs over the same one.
        self._dataloader = kwargs.get("eval_dataloader")

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        computed, self._computed = self._computed, False
        if computed or self._delegated:
            return
        self._require_attached()
        trainer = self._trainer
        assert trainer is not None
        if trainer.compute_metrics != self._compute_metrics:
            raise ValueError(
                "LoyaltyCallback got no student logits for this evaluation: `trainer."
                "compute_metrics` was replaced after `attach(trainer)`; set your own function "
                "before attaching (the callback keeps and calls it)"
            )
        if args.prediction_loss_only:
            raise ValueError(
                "LoyaltyCallback got no student logits for this evaluation: "
                "`prediction_loss_only=True` makes the Trainer skip compute_metrics"
            )
        raise ValueError(
            "LoyaltyCallback got no student logits for this evaluation: the Trainer calls "
            "compute_metrics only when the evaluation set has labels (`label_names`)"
        )

    def on_predict(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: Any = None,
        **kwargs: Any,
    ) -> None:
        self._computed = False  # predict() on a labelled set also runs compute_metrics

    def _compute_metrics(self, prediction: EvalPrediction) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if self._user_compute_metrics is not None:
            metrics.update(self._user_compute_metrics(prediction))
        student = _as_array(prediction.predictions)
        labels: np.ndarray | None = None
        if prediction.label_ids is not None:
            labels = _as_array(prediction.label_ids)
        if labels is not None and labels.ndim != 1:
            labels = None  # not single-label classification: no flips
        teacher, teacher_labels = self._teacher_logits()
        self._check_same_examples(student, labels, teacher, teacher_labels)
        result = loyalty(student, teacher, labels=labels, input_type="logits", base=self.base)
        clashes = sorted(set(metrics) & set(LOYALTY_METRICS))
        if clashes:
            raise ValueError(f"`compute_metrics` already returns {clashes}; rename them")
        metrics.update({k: result[k] for k in LOYALTY_METRICS if k in result})
        self._computed = True
        return metrics

    def _teacher_logits(self) -> tuple[np.ndarray, np.ndarray | None]:
        dataloader = self._dataloader
        if dataloader is None:
            raise ValueError("LoyaltyCallback saw no evaluation dataloader: was it attached?")
        dataset = getattr(dataloader, "dataset", None)
        # datasets.Dataset fingerprints are stable across the Trainer's column removal.
        key = getattr(dataset, "_fingerprint", None) or id(dataset)
        if key not in self._teacher_cache:
            self._teacher_cache[key] = self._run_teacher(dataloader)
        return self._teacher_cache[key]

    @torch.no_grad()
    def _run_teacher(self, dataloader: Iterable[Any]) -> tuple[np.ndarray, np.ndarray | None]:
        assert self._trainer is not None
        trainer = self._trainer
        if not isinstance(trainer.model, nn.Module):
            raise ValueError("the Trainer has no model to evaluate")
        device = model_device(trainer.model)
        teacher = self.teacher.to(device).eval()
        label_names = set(trainer.label_names or ["labels"])
        gather = trainer.accelerator.gather_for_metrics
        labels = []

        def teacher_batches() -> Iterator[dict[str, torch.Tensor]]:
            for batch in dataloader:
                batch_labels = [batch[k] for k in label_names if k in batch]
                if len(batch_labels) == 1:
                    labels.append(gather(batch_labels[0].to(device)).cpu().numpy())
                # Only what the teacher's forward reads the same way (mixed families: no
                # token_type_ids for DistilBERT or GPT-2).
                yield teacher_inputs(
                    teacher,
                    {
                        k: v.to(device)
                        for k, v in batch.items()
                        if k not in label_names and isinstance(v, torch.Tensor)
                    },
                    trainer.model,
                )

        logits = model_logits(teacher, teacher_batches(), each=gather).numpy()
        self.teacher_passes += 1
        return logits, (np.concatenate(labels) if labels else None)

    @staticmethod
    def _check_same_examples(
        student: np.ndarray,
        labels: np.ndarray | None,
        teacher: np.ndarray,
        teacher_labels: np.ndarray | None,
    ) -> None:
        if student.ndim != 2:
            raise ValueError(
                "LoyaltyCallback needs the student's 2-D eval logits, got predictions of shape "
                f"{student.shape} (does `preprocess_logits_for_metrics` reduce them?)"
            )
        if teacher.shape[1] != student.shape[1]:
            raise ValueError(
                f"`teacher` predicts {teacher.shape[1]} labels but the student predicts "
                f"{student.shape[1]}"
            )
        if teacher.shape[0] != student.shape[0]:
            raise ValueError(
                f"the evaluation set changed size since the teacher's logits were computed: "
                f"{teacher.shape[0]} examples then, {student.shape[0]} now"
            )
        if (
            labels is not None
            and teacher_labels is not None
            and not np.array_equal(labels, teacher_labels)
        ):
            raise ValueError(
                "the evaluation set's examples changed order or content since the teacher's "
                "logits were computed (its labels differ)"
            )
