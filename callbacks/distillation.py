"""Knowledge distillation inside an unchanged ``transformers.Trainer``.

``compute_loss_func`` never sees the inputs, so it cannot run a teacher. This callback instead
attaches a :class:`loyalkit.compression.distillation.Distiller` to the student at train begin:
its forward hook sees the inputs, runs the teacher and replaces ``outputs.loss`` in training mode,
which is the loss the Trainer back-propagates. Evaluation sees the student's own outputs.

Gradient accumulation: the Trainer passes ``num_items_in_batch`` (the labelled examples of the
whole accumulation window) to models whose ``forward`` takes ``**kwargs`` (BERT does) and then
does *not* divide the loss by the accumulation steps; otherwise it divides the per-batch loss
itself. The hook follows the same rule (sum / ``num_items_in_batch`` when given, batch mean
otherwise), so ``gradient_accumulation_steps=k`` with batch ``b`` matches batch ``k * b``
(transformers 4.57 and 5.x apply the same condition). Do not combine with ``compute_loss_func``
or a ``compute_loss`` override, which would replace the distillation loss.

Example:
    >>> import tempfile
    >>> from datasets import Dataset
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from transformers import Trainer, TrainingArguments
    >>> config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
    ...                     num_attention_heads=2, intermediate_size=32)
    >>> teacher, student = BertForSequenceClassification(config), BertForSequenceClassification(config)
    >>> data = Dataset.from_dict({"input_ids": [[2, 5, 7, 3]] * 8, "labels": [0, 1] * 4})
    >>> args = TrainingArguments(tempfile.mkdtemp(), max_steps=2, per_device_train_batch_size=4,
    ...                          report_to="none", use_cpu=True, save_strategy="no")
    >>> trainer = Trainer(model=student, args=args, train_dataset=data,
    ...                   callbacks=[DistillationCallback(teacher, temperature=2.0, alpha=0.5)])
    >>> trainer.train().global_step
    {'train_runtime': ...}
    2
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from loyalkit.callbacks.conflicts import Change, register_callback
from loyalkit.compression.distillation import DistillationConfig, Distiller

__all__ = ["DistillationCallback"]


class DistillationCallback(TrainerCallback):
    """Train the Trainer's model as a student of ``teacher`` (logit KD, pure-KL KD, hidden KD).

    Args:
        teacher: a fine-tuned classifier with the student's label count. It is put in eval mode,
            moved to the student's device and run without gradients; it is never trained or saved.
        temperature: softmax temperature ``T`` of the KD loss (scaled by ``T**2``).
        alpha: weight of the KD loss; ``1 - alpha`` weighs the hard-label cross-entropy.
            ``alpha=1`` is pure-KL KD and needs no labels in the dataset.
        hidden_layer_map: ``{student_layer: teacher_layer}`` for hidden-state MSE (PKD); 0 is the
            embedding output. Hidden states are requested from the student for you.
        hidden_weight: weight of the hidden-state loss.
        hidden_normalize: L2-normalise hidden states before the MSE, as PKD does.
        cache_teacher_logits: compute the teacher's logits once per distinct example (keyed by its
            token ids) and reuse them in later epochs. Not with ``hidden_layer_map``.
    """

    unique: ClassVar[str | None] = (
        "both would replace the training loss; use one with the combined settings"
    )

    def __init__(
        self,
        teacher: nn.Module,
        *,
        temperature: float = 2.0,
        alpha: float = 0.5,
        hidden_layer_map: Mapping[int, int] | None = None,
        hidden_weight: float = 1.0,
        hidden_normalize: bool = False,
        cache_teacher_logits: bool = False,
    ) -> None:
        config = DistillationConfig(
            temperature=temperature,
            alpha=alpha,
            hidden_layer_map=hidden_layer_map,
            hidden_weight=hidden_weight,
            hidden_normalize=hidden_normalize,
            cache_teacher_logits=cache_teacher_logits,
        )
        self.distiller = Distiller(teacher, config)

    @property
    def teacher(self) -> nn.Module:
        return self.distiller.teacher

    @property
    def config(self) -> DistillationConfig:
        """The distillation settings, validated once by :class:`DistillationConfig`."""
        return self.distiller.config

    def changes(self) -> tuple[Change, ...]:
        """What this callback modifies (see :mod:`loyalkit.callbacks.conflicts`)."""
        return (Change("loss", "replaces the training loss with the distillation loss"),)

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        **kwargs: Any,
    ) -> None:
        if model is None:
            raise ValueError("DistillationCallback needs the Trainer's `model` at train begin")
        register_callback(self, state, model)
        self.distiller.attach(model)

    def on_train_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        self.distiller.detach()
