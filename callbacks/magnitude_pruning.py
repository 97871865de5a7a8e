"""Magnitude pruning on a schedule inside a plain ``transformers.Trainer``.

A thin adapter over :mod:`loyalkit.compression.magnitude_pruning`: after optimizer step ``t`` the
transformer layers' weight matrices (nn.Linear and Conv1D, every family) have the schedule's sparsity ``s(t)``. Masks are recomputed from the
current weights when ``s(t)`` changes and re-applied after every optimizer step
(``on_optimizer_step`` fires right after ``optimizer.step()``), so evaluation, logs and every
checkpoint see the pruned model; checkpoints hold plain ``weight`` tensors and reload with
``from_pretrained``.

Resume: the callback's settings travel in the checkpoint's ``trainer_state.json``
(``ExportableState``; pass ``restore_callback_states_from_checkpoint=True``). The masks are not
saved: on resume they are recomputed from the checkpoint's weights, whose pruned entries are exactly
zero and so the smallest, giving the masks the run had.

Each log gets ``sparsity`` (the real share of zeros over the pruned weights) and
``pruning_schedule_sparsity`` (``s(t)``). They are added in ``on_log``, which runs after the
Trainer has stored the log in ``state.log_history`` and after callbacks listed before this one
(the reporting integrations ``report_to`` adds come first): the entry in ``log_history`` is updated
too, and integrations see the values when added after this callback, e.g.
``callbacks=[pruning, TensorBoardCallback()]`` with ``report_to="none"``.

Example:
    >>> from loyalkit.callbacks import MagnitudePruningCallback
    >>> from loyalkit.compression import CubicSchedule
    >>> pruning = MagnitudePruningCallback(
    ...     CubicSchedule(target_sparsity=0.8, start_step=100, end_step=1000, frequency=50),
    ...     scope="global",
    ... )
    >>> round(pruning.schedule.sparsity_at(550), 4)
    0.7
    >>> # Trainer(model=model, args=args, train_dataset=data, callbacks=[pruning]).train()
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_callback import ExportableState

from loyalkit.callbacks.conflicts import Change, register_callback
from loyalkit.callbacks.logs import add_to_log
from loyalkit.compression.magnitude_pruning import (
    PruningMasks,
    PruningScope,
    check_module_pattern,
    check_scope,
    magnitude_masks,
    prunable_weights,
    sparsity,
)
from loyalkit.compression.sparsity_schedules import (
    SparsitySchedule,
    schedule_from_dict,
    schedule_to_dict,
)

__all__ = ["MagnitudePruningCallback", "MagnitudePruningConfig"]


def _as_schedule(schedule: SparsitySchedule | Mapping[str, Any]) -> SparsitySchedule:
    if isinstance(schedule, Mapping):
        return schedule_from_dict(schedule)
    schedule_to_dict(schedule)  # raises a TypeError naming `schedule` for anything else
    return schedule


@dataclass(frozen=True)
class MagnitudePruningConfig:
    """What :class:`MagnitudePruningCallback` prunes, how and when; validated once, here.

    ``schedule``: a ``OneShotSchedule``, ``LinearSchedule`` or ``CubicSchedule``, or the dict its
    ``to_dict()`` makes (how a resumed run's state is restored).
    """

    schedule: SparsitySchedule | Mapping[str, Any]
    scope: PruningScope = "layer"
    module_pattern: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "schedule", _as_schedule(self.schedule))
        check_scope(self.scope)
        if self.module_pattern is not None:
            check_module_pattern(self.module_pattern)

    @property
    def sparsity_schedule(self) -> SparsitySchedule:
        """``schedule``, always as the schedule object it was made into."""
        assert not isinstance(self.schedule, Mapping)
        return self.schedule

    def as_arguments(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready (for ``ExportableState``)."""
        return {
            "schedule": self.sparsity_schedule.to_dict(),
            "scope": self.scope,
            "module_pattern": self.module_pattern,
        }


class MagnitudePruningCallback(TrainerCallback, ExportableState):
    """Prune the transformer layers' weight matrices by magnitude to ``schedule.value_at(global_step)``.

    Args:
        schedule: a ``OneShotSchedule``, ``LinearSchedule`` or ``CubicSchedule`` (or the dict
            ``schedule_to_dict`` makes of one, which is how the state is restored).
        scope: ``"layer"`` (each tensor to the target) or ``"global"`` (one threshold over all).
        module_pattern: a regular expression over module names choosing other ``nn.Linear`` or ``Conv1D``
            layers than the encoder's (see ``loyalkit.compression.prunable_weights``).
    """

    def __init__(
        self,
        schedule: SparsitySchedule | Mapping[str, Any],
        scope: PruningScope = "layer",
        module_pattern: str | None = None,
    ) -> None:
        self.config = MagnitudePruningConfig(schedule, scope, module_pattern)
        self.masks: PruningMasks | None = None
        self.mask_sparsity = 0.0

    @property
    def schedule(self) -> SparsitySchedule:
        return self.config.sparsity_schedule

    @property
    def scope(self) -> PruningScope:
        return self.config.scope

    @property
    def module_pattern(self) -> str | None:
        return self.config.module_pattern

    def changes(self) -> tuple[Change, ...]:
        """What this callback modifies (see :mod:`loyalkit.callbacks.conflicts`)."""
        pattern = self.module_pattern
        return (
            Change(
                "weights",
                "magnitude pruning recomputes its masks from the weights it covers, undoing any "
                "other pruning of them",
                fix="restrict MagnitudePruningCallback with `module_pattern` (e.g. to the "
                "feed-forward layers) so that the two prune disjoint weights, or use one of them",
                weights=lambda model: prunable_weights(model, pattern).values(),
            ),
        )

    def state(self) -> dict[str, Any]:
        return {
            "args": self.config.as_arguments(),
            "attributes": {"mask_sparsity": self.mask_sparsity},
        }

    def _enforce(self, model: nn.Module | None, step: int) -> None:
        if model is None:
            raise ValueError("MagnitudePruningCallback needs the model; the Trainer passes it")
        target = self.schedule.value_at(step)
        if target != self.mask_sparsity or (self.masks is None and target > 0):
            self.masks = magnitude_masks(model, target, self.scope, self.module_pattern)
            self.mask_sparsity = target
        if self.masks is not None:
            self.masks.apply(model)

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        register_callback(self, state, model)
        # On resume the model already holds the checkpoint's weights: this rebuilds its masks.
        self._enforce(model, state.global_step)

    def on_optimizer_step(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        # global_step is incremented after this event: this optimizer step is number global_step + 1.
        self._enforce(model, state.global_step + 1)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        if logs is None or model is None:
            return
        values = {
            "sparsity": sparsity(model, self.module_pattern),
            "pruning_schedule_sparsity": self.schedule.value_at(state.global_step),
        }
        add_to_log(logs, state, values)
