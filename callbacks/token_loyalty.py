"""Token-level loyalty of a causal LM to its teacher at every evaluation of a ``transformers.Trainer``.

``TokenLoyaltyCallback(teacher).attach(trainer)`` adds ``label_loyalty`` (same top-1 token),
``probability_loyalty``, ``kl_divergence`` (mean), ``kl_divergence_p99``, ``delta_p_rms`` and
``ppl_ratio`` (student / teacher perplexity) under the evaluation's prefix (``eval_label_loyalty``,
...) to what ``evaluate()`` returns (so ``metric_for_best_model="label_loyalty"`` works), and logs
them with ``trainer.log`` so that they reach ``state.log_history`` and the reporting integrations.

Why its own pass instead of ``compute_metrics`` (as :class:`LoyaltyCallback` does for classifiers):
the Trainer would gather every eval position's logits over the whole vocabulary (tokens x vocabulary
floats) before ``compute_metrics`` sees them. Here, after each evaluation, the teacher and the
student run in lockstep over the same eval dataloader, the per-token statistics of
:mod:`loyalkit.metrics.token_loyalty` are computed batch by batch, and only those (a few numbers per
token) are gathered across processes (``accelerator.gather_for_metrics``): memory stays at one batch
of logits. Scored positions are those whose shifted ``labels`` are not -100, as in the causal-LM
loss. It works with ``Trainer`` subclasses: it needs only the eval
dataloader, the model and the accelerator, which every Trainer has (tested with a subclass
that overrides ``compute_loss`` and inside TRL's ``SFTTrainer``, against scipy).

Example:
    >>> from loyalkit.callbacks.token_loyalty import TokenLoyaltyCallback
    >>> # trainer = Trainer(model=student_lm, args=args, train_dataset=train, eval_dataset=dev,
    >>> #                   data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))
    >>> # TokenLoyaltyCallback(teacher_lm).attach(trainer)
    >>> # trainer.evaluate()["eval_label_loyalty"]
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from loyalkit.callbacks.conflicts import Change, conflict
from loyalkit.metrics.token_loyalty import (
    TokenLoyaltyAccumulator,
    TokenStatistics,
    token_statistics,
)

__all__ = ["TOKEN_LOYALTY_METRICS", "TokenLoyaltyCallback"]

TOKEN_LOYALTY_METRICS: tuple[str, ...] = (
    "label_loyalty",
    "probability_loyalty",
    "kl_divergence",
    "kl_divergence_p99",
    "delta_p_rms",
    "ppl_ratio",
)

_FIELDS = ("agree", "probability_loyalty", "kl", "delta_p", "nll_teacher", "nll_student")


def _prefix(metrics: dict[str, Any]) -> str:
    """The evaluation's metric prefix (``eval``, ``eval_NAME``...), read from its runtime key."""
    for key in metrics:
        if key.endswith("_runtime"):
            return key[: -len("_runtime")]
    return "eval"


class TokenLoyaltyCallback(TrainerCallback):
    """Token-level teacher-student loyalty at every evaluation (see the module docstring).

    Args:
        teacher: the original causal LM; it is put in eval mode on the student's device.
    """

    def __init__(self, teacher: nn.Module) -> None:
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"`teacher` must be a torch.nn.Module, got {type(teacher).__name__}")
        self.teacher = teacher
        self._trainer: Trainer | None = None

    def attach(self, trainer: Trainer) -> TokenLoyaltyCallback:
        """Register with ``trainer`` (any ``Trainer`` subclass); returns the callback.

        A callback already in ``Trainer(..., callbacks=[...])`` is not registered twice.
        """
        return self._attach(trainer, on_behalf_of=None)

    def _attach(
        self, trainer: Trainer, on_behalf_of: TrainerCallback | None
    ) -> TokenLoyaltyCallback:
        """``attach``; ``on_behalf_of``: the LoyaltyCallback handing its causal LM over."""

        if not isinstance(trainer, Trainer):
            raise TypeError(
                f"`trainer` must be a transformers.Trainer, got {type(trainer).__name__}"
            )
        if self._trainer is not None:
            raise ValueError("this TokenLoyaltyCallback is already attached to a Trainer")
        listed = any(cb is self for cb in trainer.callback_handler.callbacks)
        for other in trainer.callback_handler.callbacks:
            if other is self or other is on_behalf_of:
                continue
            problem = conflict(other, self, None)
            if problem is not None:
                raise ValueError(problem)
        self._trainer = trainer
        if not listed:
            trainer.add_callback(self)
        return self

    def changes(self) -> tuple[Change, ...]:
        """What this callback modifies (see :mod:`loyalkit.callbacks.conflicts`)."""
        names = TOKEN_LOYALTY_METRICS
        return (Change("metrics", "reports token-level loyalty to the teacher", names=names),)

    def _require_attached(self) -> Trainer:
        if self._trainer is None:
            raise ValueError(
                "TokenLoyaltyCallback is in the Trainer's callbacks but was never attached: call "
                "`TokenLoyaltyCallback(teacher).attach(trainer)` after building the Trainer (it "
                "logs its values with trainer.log and gathers them with trainer.accelerator, "
                "which callbacks are not given; `callbacks=[...]` alone cannot)"
            )
        return self._trainer

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._require_attached()

    def on_prediction_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._require_attached()  # fail at the first batch, not after the whole evaluation

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        trainer = self._require_attached()
        dataloader = kwargs.get("eval_dataloader")
        if dataloader is None or metrics is None:
            raise ValueError("TokenLoyaltyCallback saw no evaluation dataloader or metrics")
        prefix = _prefix(metrics)
        result = self._measure(trainer, dataloader)
        values = {
            "label_loyalty": result["label_loyalty"],
            "probability_loyalty": result["probability_loyalty"],
            "kl_divergence": result["kl_divergence"]["mean"],
            "kl_divergence_p99": result["kl_divergence"]["percentiles"]["99%"],
            "delta_p_rms": result["delta_p"]["rms"],
            "ppl_ratio": result["ppl_ratio"],
        }
        prefixed = {f"{prefix}_{name}": value for name, value in values.items()}
        clashes = sorted(set(prefixed) & set(metrics))
        if clashes:
            raise ValueError(f"the evaluation metrics already hold {clashes}; rename them")
        metrics.update(prefixed)  # what evaluate() returns and metric_for_best_model reads
        trainer.log(prefixed)  # the logs were written before this event: log these too

    @torch.no_grad()
    def _measure(self, trainer: Trainer, dataloader: Iterable[Any]) -> dict[str, Any]:
        student = trainer.model
        if not isinstance(student, nn.Module):
            raise ValueError("the Trainer has no model to evaluate")
        device = next(student.parameters()).device
        teacher = self.teacher.to(device).eval()
        was_training = student.training
        student.eval()
        accumulator = TokenLoyaltyAccumulator()
        try:
            for batch in dataloader:
                accumulator.update(self._batch_statistics(trainer, teacher, student, batch, device))
        finally:
            student.train(was_training)
        return accumulator.result()

    @staticmethod
    def _batch_statistics(
        trainer: Trainer, teacher: nn.Module, student: nn.Module, batch: Any, device: torch.device
    ) -> TokenStatistics:
        labels = batch.get("labels") if isinstance(batch, dict) else None
        if labels is None:
            raise ValueError(
                "TokenLoyaltyCallback needs `labels` in the eval batches (the next-token targets, "
                "-100 where not scored), as DataCollatorForLanguageModeling(mlm=False) makes them"
            )
        inputs = {
            k: v.to(device)
            for k, v in batch.items()
            if k != "labels" and isinstance(v, torch.Tensor)
        }
        targets = labels[:, 1:].to(device)
        scored = targets != -100
        teacher_logits = teacher(**inputs).logits[:, :-1][scored]
        student_logits = student(**inputs).logits[:, :-1][scored]
        stats = token_statistics(student_logits, teacher_logits, targets[scored])
        # Back into (batch, positions) with NaN where unscored: rows of equal width gather across
        # processes, and gather_for_metrics drops the duplicated samples of the last batch.
        grids = []
        for name in _FIELDS:
            grid = torch.full(targets.shape, float("nan"), dtype=torch.float64, device=device)
            grid[scored] = getattr(stats, name).double()
            grids.append(grid)
        accelerator = trainer.accelerator
        stacked = accelerator.pad_across_processes(
            torch.stack(grids, dim=-1), dim=1, pad_index=float("nan")
        )
        gathered = accelerator.gather_for_metrics(stacked).reshape(-1, len(_FIELDS))
        gathered = gathered[~torch.isnan(gathered[:, 0])].cpu()
        columns = dict(zip(_FIELDS, gathered.unbind(dim=1), strict=True))
        columns["agree"] = columns["agree"] > 0.5
        return TokenStatistics(**columns)
