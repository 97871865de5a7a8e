"""Feed-forward neuron (width) pruning inside a plain ``transformers.Trainer``.

At optimizer step ``step`` (0: before the first step) the callback scores the intermediate
neurons (gradient importance on the first ``num_batches`` training batches, or weight magnitude)
and silences the same number of least important neurons in every layer: their columns of the
feed-forward output projection are held at zero after every optimizer step, so the optimizer,
DDP and the learning-rate schedule keep the parameters they were built with, every checkpoint
reloads with ``from_pretrained`` to the same predictions, and a resumed run silences the same
neurons. At train end the silenced neurons are removed physically (smaller matrices, less
compute) and the config's intermediate size is updated: a plain ``from_pretrained`` reloads the
saved model. Composes with :class:`~loyalkit.callbacks.DistillationCallback` (KD while the pruned
model recovers).

Example (``model``, ``teacher``, ``args``, ``train_set``: a BERT-style classifier, its fine-tuned
original, ``TrainingArguments`` and a tokenized dataset with labels)::

    from transformers import Trainer
    from loyalkit.callbacks import DistillationCallback, FfnPruningCallback

    pruning = FfnPruningCallback(fraction=0.5, importance="gradient")
    trainer = Trainer(model=model, args=args, train_dataset=train_set,
                      callbacks=[pruning, DistillationCallback(teacher)])
    trainer.train()                      # half of every layer's FFN neurons are gone at the end
    trainer.save_model("pruned")         # AutoModelForSequenceClassification.from_pretrained
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from loyalkit.callbacks.conflicts import Change, register_callback
from loyalkit.callbacks.head_pruning import module_replacement_conflict, scoring_batches
from loyalkit.compression.ffn_importance import gradient_ffn_importance, magnitude_ffn_importance
from loyalkit.compression.ffn_pruning import (
    ffn_output_weights,
    ffn_parts,
    ffn_removal_count,
    remove_ffn_neurons,
    select_ffn_neurons,
    zero_ffn_neurons,
    zeroed_ffn_neurons,
)

__all__ = ["FfnPruningCallback", "FfnPruningConfig"]

logger = logging.getLogger(__name__)


def _positive_int(name: str, value: Any, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class FfnPruningConfig:
    """What :class:`FfnPruningCallback` removes, and when.

    Exactly one of ``fraction`` (of every layer's neurons, in (0, 1)) and ``count`` (neurons per
    layer). ``step``: the optimizer step at which the neurons are scored and silenced (0: before
    training). ``batch_size`` defaults to the Trainer's per-device training batch size.
    """

    fraction: float | None = None
    count: int | None = None
    step: int = 0
    importance: Literal["gradient", "magnitude"] = "gradient"
    num_batches: int = 8
    batch_size: int | None = None
    remove_at_train_end: bool = True

    def __post_init__(self) -> None:
        # a layer of 2**30 neurons stands in for the model, checked again at train begin
        ffn_removal_count(2**30, fraction=self.fraction, count=self.count)
        if self.importance not in ("gradient", "magnitude"):
            raise ValueError(
                f"importance: expected 'gradient' or 'magnitude', got {self.importance!r}"
            )
        _positive_int("step", self.step, 0)
        _positive_int("num_batches", self.num_batches)
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size)
        if not isinstance(self.remove_at_train_end, bool):
            raise TypeError(
                f"remove_at_train_end: expected a bool, got {self.remove_at_train_end!r}"
            )

    def as_arguments(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready (for ``ExportableState``)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class FfnPruningCallback(TrainerCallback, ExportableState):
    """Score and silence feed-forward neurons at ``step``; remove them physically at train end.

    Arguments are those of :class:`FfnPruningConfig`. ``masked_neurons`` (one list per layer) is
    the set silenced; it survives a resume with
    ``TrainingArguments(restore_callback_states_from_checkpoint=True)``.
    """

    unique: ClassVar[str | None] = "both would score and remove feed-forward neurons; use one"

    def __init__(self, **options: Any) -> None:
        self.config = FfnPruningConfig(**options)
        self.masked_neurons: list[list[int]] = []

    def changes(self) -> tuple[Change, ...]:
        """What this callback modifies (see :mod:`loyalkit.callbacks.conflicts`)."""
        silences = Change(
            "weights",
            "feed-forward pruning silences whole neurons and removes them, changing the shapes "
            "that masks over these weights were computed for",
            weights=ffn_output_weights,
            label="the feed-forward output projection",
        )
        if not self.config.remove_at_train_end:
            return (silences,)
        removes = Change(
            "linear_layers",
            "removes the silenced neurons from the feed-forward layers at train end, which "
            "needs float nn.Linear layers",
            fix="pass remove_at_train_end=False to FfnPruningCallback and remove the neurons "
            "after training (loyalkit.compression.remove_ffn_neurons with "
            "zeroed_ffn_neurons(model))",
            at_train_end=True,
        )
        return (silences, removes)

    def model_conflict(self, model: Any) -> str | None:
        """Why this callback cannot work on ``model``, or ``None`` (see ``conflicts``)."""
        return module_replacement_conflict(
            "FfnPruningCallback", model, "prune the exported successor's neurons instead"
        )

    def state(self) -> dict[str, Any]:
        return {
            "args": self.config.as_arguments(),
            "attributes": {"masked_neurons": self.masked_neurons},
        }

    def _prune(self, model: Any, args: Any, train_dataloader: Any) -> None:
        scores: torch.Tensor
        if self.config.importance == "gradient":
            batches = scoring_batches(
                "FfnPruningCallback",
                args,
                train_dataloader,
                self.config.batch_size,
                self.config.num_batches,
            )
            scores = gradient_ffn_importance(model, batches)
        else:
            scores = magnitude_ffn_importance(model)
        self.masked_neurons = select_ffn_neurons(
            scores, fraction=self.config.fraction, count=self.config.count
        )
        zero_ffn_neurons(model, self.masked_neurons)

    def _apply_due(self, step: int, model: Any, args: Any, train_dataloader: Any) -> None:
        if not self.masked_neurons and step >= self.config.step:
            self._prune(model, args, train_dataloader)

    def _silence(self, model: Any) -> None:
        if self.masked_neurons:
            zero_ffn_neurons(model, self.masked_neurons)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs["model"]
        register_callback(self, state, model)
        # fail now, not hundreds of steps in, if this model cannot lose that many neurons
        neurons = ffn_parts(model)[0].neurons
        ffn_removal_count(neurons, fraction=self.config.fraction, count=self.config.count)
        if state.max_steps and self.config.step > state.max_steps:
            raise ValueError(
                f"step: FfnPruningCallback prunes at step {self.config.step}, after the last "
                f"of this run's {state.max_steps} steps"
            )
        self._silence(model)  # a resumed run: already zero in the checkpoint
        self._apply_due(state.global_step, model, args, kwargs.get("train_dataloader"))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs["model"]
        self._silence(model)  # the optimizer step moved them
        self._apply_due(state.global_step, model, args, kwargs.get("train_dataloader"))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.config.remove_at_train_end:
            return
        if not self.masked_neurons:
            raise RuntimeError(
                f"FfnPruningCallback: training ended at step {state.global_step} before the "
                f"pruning step {self.config.step}; no neuron was removed"
            )
        model = kwargs["model"]
        silent = zeroed_ffn_neurons(model)
        # With load_best_model_at_end the weights may predate the pruning step: remove the
        # neurons only if they really are silent in the final weights, so predictions do not
        # change, and every layer loses the same number.
        missing = [
            sorted(set(masked) - set(zero))
            for masked, zero in zip(self.masked_neurons, silent, strict=True)
        ]
        if any(missing):
            logger.warning(
                "FfnPruningCallback: %d silenced neurons are not silent in the final weights; "
                "none removed",
                sum(len(m) for m in missing),
            )
            return
        remove_ffn_neurons(model, self.masked_neurons)
        logger.info(
            "FfnPruningCallback: removed %d neurons per layer (intermediate size now %d)",
            len(self.masked_neurons[0]),
            ffn_parts(model)[0].neurons,
        )
