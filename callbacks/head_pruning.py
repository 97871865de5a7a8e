"""Attention-head pruning inside a plain ``transformers.Trainer``, once or on a schedule.

At each scheduled optimizer step the callback scores the heads still active on the first
``num_batches`` batches of the training data (gradient importance of Michel et al. 2019, or
weight magnitude) and silences the least important ones until ``share`` of all original heads
are gone. During training a silenced head keeps its parameters but its columns of the attention
output projection are held at zero after every optimizer step: the optimizer, DDP and the
learning-rate schedule keep the parameters they were built with, every checkpoint reloads with
``from_pretrained`` to the same predictions, and a resumed run silences the same heads. At train
end the silenced heads are removed physically (smaller matrices, faster inference) and
``config.pruned_heads`` records them; reload the saved model with
:func:`loyalkit.compression.load_head_pruned`.

Example (``model``, ``args``, ``train_set``: a BERT-style classifier, ``TrainingArguments`` and a
tokenized dataset with labels)::

    from transformers import Trainer
    from loyalkit.callbacks import HeadPruningCallback

    pruning = HeadPruningCallback(schedule={0: 0.25, 200: 0.5}, importance="gradient")
    trainer = Trainer(model=model, args=args, train_dataset=train_set, callbacks=[pruning])
    trainer.train()                      # half of the heads are gone at the end
    trainer.save_model("pruned")         # reload: loyalkit.compression.load_head_pruned("pruned")
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal

from torch.utils.data import DataLoader
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from loyalkit.callbacks.conflicts import Change, register_callback
from loyalkit.compression.head_importance import (
    gradient_head_importance,
    magnitude_head_importance,
)
from loyalkit.compression.head_pruning import (
    HeadMap,
    head_weights,
    prune_heads,
    select_heads_to_prune,
    zero_head_outputs,
    zeroed_heads,
)
from loyalkit.compression.head_pruning_schedule import HeadPruningSchedule

__all__ = ["HeadPruningCallback", "HeadPruningConfig"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class HeadPruningConfig:
    """When and how many heads :class:`HeadPruningCallback` removes.

    ``schedule``: a :class:`~loyalkit.compression.HeadPruningSchedule`, or the mapping it is built
    from (optimizer step -> share of all original heads removed by then, in [0, 1) and
    non-decreasing; ``{0: 0.5}`` prunes once at the start). ``batch_size`` defaults to the
    Trainer's per-device training batch size.
    """

    schedule: HeadPruningSchedule | Mapping[int, float]
    importance: Literal["gradient", "magnitude"] = "gradient"
    num_batches: int = 8
    batch_size: int | None = None
    scope: Literal["global", "layer"] = "global"
    min_heads_per_layer: int = 1
    remove_at_train_end: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.schedule, HeadPruningSchedule):
            object.__setattr__(self, "schedule", HeadPruningSchedule(self.schedule))
        if self.importance not in ("gradient", "magnitude"):
            raise ValueError(
                f"importance: expected 'gradient' or 'magnitude', got {self.importance!r}"
            )
        if self.scope not in ("global", "layer"):
            raise ValueError(f"scope: expected 'global' or 'layer', got {self.scope!r}")
        for name in ("num_batches", "min_heads_per_layer"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool)
            or not isinstance(self.batch_size, int)
            or self.batch_size < 1
        ):
            raise ValueError(f"batch_size: expected None or an int >= 1, got {self.batch_size!r}")
        if not isinstance(self.remove_at_train_end, bool):
            raise TypeError(
                f"remove_at_train_end: expected a bool, got {self.remove_at_train_end!r}"
            )

    @property
    def head_schedule(self) -> HeadPruningSchedule:
        """``schedule``, always as the :class:`HeadPruningSchedule` it was made into."""
        assert isinstance(self.schedule, HeadPruningSchedule)
        return self.schedule

    @property
    def steps(self) -> tuple[tuple[int, float], ...]:
        """``(step, share)`` pairs in step order."""
        return self.head_schedule.steps

    def as_arguments(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready (for ``ExportableState``)."""
        arguments = {f.name: getattr(self, f.name) for f in fields(self)}
        arguments["schedule"] = self.head_schedule.to_dict()["shares"]
        return arguments


def module_replacement_conflict(callback: str, model: Any, reason: str) -> str | None:
    """``callback``'s refusal of a model prepared for module replacement (``reason``), or None."""
    from loyalkit.compression.module_replacement import ModuleReplacementLayers

    if model is not None and any(
        isinstance(module, ModuleReplacementLayers) for module in model.modules()
    ):
        return (
            f"{callback} conflicts with module replacement (ModuleReplacementCallback / "
            f"prepare_module_replacement): {reason}"
        )
    return None


def scoring_batches(
    who: str,
    args: Any,
    train_dataloader: DataLoader | None,
    batch_size: int | None,
    num_batches: int,
) -> list[Any]:
    """The first ``num_batches`` batches of the training data, for gradient importance.

    A fresh, unshuffled loader over the same data: reproducible scores, and the Trainer's own
    loader (its sampler, RNG and accelerate state) is left alone. ``batch_size`` defaults to the
    Trainer's per-device training batch size.
    """
    if train_dataloader is None:
        raise ValueError(f"{who}: gradient importance needs the train_dataloader")
    loader = DataLoader(
        train_dataloader.dataset,
        batch_size=batch_size or args.per_device_train_batch_size,
        collate_fn=train_dataloader.collate_fn,
        shuffle=False,
    )
    return list(itertools.islice(loader, num_batches))


class HeadPruningCallback(TrainerCallback, ExportableState):
    """Score and silence attention heads on ``schedule``; remove them physically at train end.

    Arguments are those of :class:`HeadPruningConfig`. ``masked_heads`` (layer -> original head
    indices) is the set silenced so far; it survives a resume with
    ``TrainingArguments(restore_callback_states_from_checkpoint=True)``.
    """

    unique: ClassVar[str | None] = (
        "both would score and remove the same attention heads; put every step in one schedule"
    )

    def __init__(self, schedule: HeadPruningSchedule | Mapping[int, float], **options: Any) -> None:
        self.config = HeadPruningConfig(schedule=schedule, **options)
        self.masked_heads: dict[str, list[int]] = {}
        self.applied_steps: list[int] = []

    def changes(self) -> tuple[Change, ...]:
        """What this callback modifies (see :mod:`loyalkit.callbacks.conflicts`)."""
        silences = Change(
            "weights",
            "head pruning silences whole heads and removes them, changing the shapes that "
            "masks over these weights were computed for",
            weights=head_weights,
            label="the attention projection",
        )
        if not self.config.remove_at_train_end:
            return (silences,)
        removes = Change(
            "linear_layers",
            "removes the silenced heads from the attention layers at train end, which needs "
            "float nn.Linear layers",
            fix="pass remove_at_train_end=False to HeadPruningCallback, or remove the heads "
            "(loyalkit.compression.prune_heads) and quantize after training",
            at_train_end=True,
        )
        return (silences, removes)

    def model_conflict(self, model: Any) -> str | None:
        """Why this callback cannot work on ``model``, or ``None`` (see ``conflicts``)."""
        return module_replacement_conflict(
            "HeadPruningCallback",
            model,
            "the encoder's layers are predecessor/successor blocks whose heads cannot be "
            "removed; prune the heads of the exported successor instead",
        )

    def state(self) -> dict[str, Any]:
        return {
            "args": self.config.as_arguments(),
            "attributes": {"masked_heads": self.masked_heads, "applied_steps": self.applied_steps},
        }

    def _masked(self) -> HeadMap:
        return {int(layer): list(heads) for layer, heads in self.masked_heads.items()}

    def _scoring_batches(self, args: Any, train_dataloader: DataLoader | None) -> list[Any]:
        return scoring_batches(
            "HeadPruningCallback",
            args,
            train_dataloader,
            self.config.batch_size,
            self.config.num_batches,
        )

    def _prune_to(self, share: float, model: Any, args: Any, train_dataloader: Any) -> None:
        if self.config.importance == "gradient":
            scores = gradient_head_importance(model, self._scoring_batches(args, train_dataloader))
        else:
            scores = magnitude_head_importance(model)
        for layer, heads in self._masked().items():
            scores[layer, heads] = math.nan
        chosen = select_heads_to_prune(
            scores,
            share,
            scope=self.config.scope,
            min_heads_per_layer=self.config.min_heads_per_layer,
        )
        for layer, heads in chosen.items():
            self.masked_heads[str(layer)] = sorted(
                set(self.masked_heads.get(str(layer), [])) | set(heads)
            )
        zero_head_outputs(model, self._masked())

    def _apply_due(self, step: int, model: Any, args: Any, train_dataloader: Any) -> None:
        due = [s for s, _ in self.config.steps if s <= step and s not in self.applied_steps]
        if due:
            self._prune_to(self.config.head_schedule.value_at(step), model, args, train_dataloader)
            self.applied_steps.extend(due)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs["model"]
        register_callback(self, state, model)
        # fail now, not hundreds of steps in, if the last share cannot be reached on this model
        present = magnitude_head_importance(model) * 0  # 0 per head present, NaN if removed
        last_step = self.config.steps[-1][0]
        select_heads_to_prune(
            present,
            self.config.head_schedule.value_at(last_step),
            scope=self.config.scope,
            min_heads_per_layer=self.config.min_heads_per_layer,
        )
        zero_head_outputs(model, self._masked())  # a resumed run: already zero in the checkpoint
        self._apply_due(state.global_step, model, args, kwargs.get("train_dataloader"))

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs["model"]
        zero_head_outputs(model, self._masked())  # the optimizer step moved them
        self._apply_due(state.global_step, model, args, kwargs.get("train_dataloader"))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.config.remove_at_train_end:
            return
        model = kwargs["model"]
        silent = zeroed_heads(model)
        removable = {
            layer: [h for h in heads if h in silent.get(layer, [])]
            for layer, heads in self._masked().items()
        }
        # With load_best_model_at_end the weights may predate later pruning steps: remove only
        # heads that really are silent in the final weights, so predictions do not change.
        skipped = {
            layer: sorted(set(h) - set(removable[layer])) for layer, h in self._masked().items()
        }
        if any(skipped.values()):
            logger.warning(
                "HeadPruningCallback: heads %s are not silent in the final weights; kept", skipped
            )
        prune_heads(model, {layer: heads for layer, heads in removable.items() if heads})
