"""Drive progressive module replacement (BERT-of-Theseus) from a plain ``transformers.Trainer``.

The successor must exist before the Trainer builds its optimizer (parameters created later are never
trained), so the model is prepared first with
:func:`~loyalkit.compression.module_replacement.prepare_module_replacement`; this callback then sets
the replacement rate p from its schedule before every optimizer step, seeds that step's Bernoulli
draws from ``(seed, global_step)`` (identical on every process and after a resume), adds
``replacement_rate`` to the logs, and can export the successor at train end.

Example:
    >>> import tempfile
    >>> from transformers import (BertConfig, BertForSequenceClassification, Trainer,
    ...                           TrainingArguments)
    >>> from loyalkit.compression import prepare_module_replacement
    >>> config = BertConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=4,
    ...                     intermediate_size=64, vocab_size=100)
    >>> model = BertForSequenceClassification(config)
    >>> _ = prepare_module_replacement(model, num_successor_layers=2)  # before the Trainer
    >>> data = [{"input_ids": [2, 7, 9, 3], "labels": i % 2} for i in range(8)]
    >>> out = tempfile.mkdtemp()
    >>> callback = ModuleReplacementCallback(
    ...     ConstantReplacementSchedule(rate=0.5, replacing_steps=2), export_dir=f"{out}/successor")
    >>> args = TrainingArguments(out, max_steps=3, per_device_train_batch_size=4, use_cpu=True,
    ...                          logging_strategy="no", save_strategy="no", report_to="none",
    ...                          disable_tqdm=True)
    >>> _ = Trainer(model=model, args=args, train_dataset=data, callbacks=[callback]).train()
    {'train_runtime': ...}
    >>> BertForSequenceClassification.from_pretrained(f"{out}/successor").config.num_hidden_layers
    2
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from torch import nn
from transformers import (
    PreTrainedModel,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.trainer_callback import ExportableState

from loyalkit.callbacks.conflicts import Change, register_callback
from loyalkit.callbacks.logs import add_to_log
from loyalkit.compression.module_replacement import (
    ConstantReplacementSchedule,
    LinearReplacementSchedule,
    ModuleReplacementLayers,
    ReplacementSchedule,
    export_successor,
    find_module_replacement,
    replacement_schedule_from_dict,
)
from loyalkit.compression.quantization import save_quantized

__all__ = ["ModuleReplacementCallback", "ModuleReplacementConfig"]


def step_seed(seed: int, step: int) -> int:
    """A well-mixed seed for one optimizer step's draws (``seed + step`` would overlap runs)."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1, dtype=np.uint64)[0])


def _check_optimizer_trains(
    layers: ModuleReplacementLayers, model: nn.Module, optimizer: Any
) -> None:
    """Fail loudly when the optimizer was built before the successor existed."""
    if optimizer is None:
        return
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    # Sharded optimizers (FSDP, DeepSpeed) hold flat copies: nothing to compare against.
    if not held & {id(p) for p in model.parameters()}:
        return
    if any(id(p) not in held for p in layers.successor_parameters()):
        raise ValueError(
            "the optimizer does not hold the successor's parameters: call "
            "prepare_module_replacement(model, ...) before creating the optimizer or the Trainer"
        )


@dataclass(frozen=True)
class ModuleReplacementConfig:
    """The settings of :class:`ModuleReplacementCallback`; validated once, here.

    ``schedule``: a :class:`ConstantReplacementSchedule` or :class:`LinearReplacementSchedule`, or
    its ``to_dict()``.
    """

    schedule: ReplacementSchedule | Mapping[str, Any]
    seed: int | None = None
    export_dir: str | None = None

    def __post_init__(self) -> None:
        schedule = self.schedule
        if isinstance(schedule, Mapping):
            schedule = replacement_schedule_from_dict(schedule)
        if not isinstance(schedule, (ConstantReplacementSchedule, LinearReplacementSchedule)):
            raise TypeError(
                "schedule must be a ConstantReplacementSchedule or LinearReplacementSchedule, "
                f"got {type(schedule).__name__}"
            )
        object.__setattr__(self, "schedule", schedule)
        seed = self.seed
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        if self.export_dir is not None and not isinstance(self.export_dir, str):
            raise TypeError(
                f"export_dir must be a str or None, got {type(self.export_dir).__name__}"
            )

    @property
    def replacement_schedule(self) -> ReplacementSchedule:
        """``schedule``, always as the schedule object it was made into."""
        assert not isinstance(self.schedule, Mapping)
        return self.schedule

    def as_arguments(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready (for ``ExportableState``)."""
        return {
            "schedule": self.replacement_schedule.to_dict(),
            "seed": self.seed,
            "export_dir": self.export_dir,
        }


class ModuleReplacementCallback(TrainerCallback, ExportableState):
    """Sets the replacement rate from ``schedule`` at every step of a prepared model.

    Args:
        schedule: a :class:`ConstantReplacementSchedule` or :class:`LinearReplacementSchedule` (or
            its ``to_dict()``), evaluated at ``state.global_step`` before each optimizer step.
        seed: seeds the per-step Bernoulli draws; default ``TrainingArguments.seed``.
        export_dir: when set, the exported successor is saved there at train end (main process).

    State (``replacement_rate``, ``step``) survives a resume through ``ExportableState`` when
    ``TrainingArguments.restore_callback_states_from_checkpoint=True``; the Trainer then replaces
    this instance by a restored one (look it up in ``trainer.callback_handler.callbacks``).
    """

    unique: ClassVar[str | None] = "both would set the replacement rate of the same blocks"

    def __init__(
        self,
        schedule: ReplacementSchedule | Mapping[str, Any],
        *,
        seed: int | None = None,
        export_dir: str | None = None,
    ) -> None:
        self.config = ModuleReplacementConfig(schedule, seed=seed, export_dir=export_dir)
        self.replacement_rate: float | None = None
        self.step: int | None = None

    @property
    def schedule(self) -> ReplacementSchedule:
        return self.config.replacement_schedule

    @property
    def seed(self) -> int | None:
        return self.config.seed

    @property
    def export_dir(self) -> str | None:
        return self.config.export_dir

    def changes(self) -> tuple[Change, ...]:
        """What this callback modifies (see :mod:`loyalkit.callbacks.conflicts`)."""
        stack = Change("layer_stack", "swaps predecessor blocks for their successors")
        if self.export_dir is None:
            return (stack,)
        return (stack, Change("export", "exports the successor at train end", at_train_end=True))

    def state(self) -> dict[str, Any]:
        return {
            "args": self.config.as_arguments(),
            "attributes": {"replacement_rate": self.replacement_rate, "step": self.step},
        }

    def _set_rate(self, args: TrainingArguments, step: int, model: nn.Module) -> None:
        layers = find_module_replacement(model)
        self.replacement_rate = self.schedule.value_at(step)
        self.step = step
        layers.replacement_rate = self.replacement_rate
        layers.manual_seed(step_seed(args.seed if self.seed is None else self.seed, step))

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        optimizer: Any = None,
        **kwargs: Any,
    ) -> None:
        if model is None:
            raise ValueError("ModuleReplacementCallback needs the Trainer's model")
        register_callback(self, state, model)
        _check_optimizer_trains(find_module_replacement(model), model, optimizer)
        self._set_rate(args, state.global_step, model)

    def on_step_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        if model is not None:
            self._set_rate(args, state.global_step, model)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if logs is None or self.replacement_rate is None:
            return
        add_to_log(logs, state, {"replacement_rate": self.replacement_rate})

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        if self.export_dir is None or not state.is_world_process_zero:
            return
        if not isinstance(model, PreTrainedModel):
            raise TypeError(
                f"export needs a transformers PreTrainedModel, got {type(model).__name__}"
            )
        successor = export_successor(model)
        if getattr(successor, "hf_quantizer", None) is not None:
            save_quantized(successor, self.export_dir)  # int8: listed after a quantization callback
        else:
            successor.save_pretrained(self.export_dir)
