"""What the method files share: the context they get, the Trainer they train in, how they save.

Every method saves the student (with the tokenizer) to ``model_dir`` in a format
:func:`loyalkit.study.measure.load_student` reads back: ``save_pretrained`` for float models,
:func:`~loyalkit.compression.save_quantized` (torchao int8, reloaded by a plain
``from_pretrained``) for int8 ones, ``config.pruned_heads`` (reloaded by
:func:`~loyalkit.compression.load_head_pruned`) after head pruning.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loyalkit.study.methods._registry import RunSpec

if TYPE_CHECKING:
    from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments

logger = logging.getLogger("loyalkit.study.methods")


@dataclass
class MethodContext:
    """What every method gets: the fine-tuned teacher (float, eval mode), its folder, the
    tokenizer, the tokenized training split (model inputs and ``labels``) and its collator."""

    teacher: PreTrainedModel
    teacher_dir: Path
    tokenizer: Any
    train: Any
    collator: Any
    is_main_process: bool = True
    num_processes: int = 1
    extra_callbacks: tuple[TrainerCallback, ...] = ()
    progress: bool = True


def train_steps(num_examples: int, epochs: float, batch_size: int, num_processes: int = 1) -> int:
    """Optimizer steps of ``epochs`` over ``num_examples`` (what the Trainer will run).

    >>> train_steps(480, 2.5, 16), train_steps(480, 2.5, 16, num_processes=2)
    (75, 38)
    """
    per_epoch = max(1, math.ceil(num_examples / (batch_size * num_processes)))
    return max(1, math.ceil(epochs * per_epoch))


def steps(context: MethodContext, settings: Any) -> int:
    """The optimizer steps of ``settings`` (epochs, batch size) over the context's training split."""
    return train_steps(
        len(context.train), settings.epochs, settings.batch_size, context.num_processes
    )


def training_arguments(
    folder: Path, settings: Any, seed: int, steps: int, progress: bool = True
) -> TrainingArguments:
    """Arguments of every training run: linear decay after 10% warm-up, no checkpoints."""
    import torch
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(folder),
        # Without a GPU, `accelerate launch` runs the processes on CPU over gloo.
        use_cpu=not torch.cuda.is_available(),
        max_steps=steps,
        per_device_train_batch_size=settings.batch_size,
        learning_rate=settings.learning_rate,
        warmup_steps=max(1, steps // 10),
        save_strategy="no",
        logging_steps=max(1, min(25, steps // 5)),
        report_to="none",
        seed=seed,
        data_seed=seed,
        disable_tqdm=not progress,
    )


def training_log_callback() -> TrainerCallback:
    """A callback copying the Trainer's logs (loss, learning rate, sparsity...) to this logger."""
    from transformers import TrainerCallback

    class TrainingLog(TrainerCallback):
        """Copies the Trainer's logs (loss, learning rate, sparsity...) into the study log."""

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if logs and state.is_world_process_zero:
                logger.info("step %d: %s", state.global_step, logs)

    return TrainingLog()


def train(
    context: MethodContext,
    model: PreTrainedModel,
    settings: Any,
    seed: int,
    model_dir: Path,
    callbacks: list[TrainerCallback],
    max_steps: int | None = None,
) -> Trainer:
    """Train ``model`` on the context's split with ``callbacks`` in a plain Trainer."""
    from transformers import Trainer

    if max_steps is None:
        max_steps = steps(context, settings)
    trainer = Trainer(
        model=model,
        args=training_arguments(
            model_dir.parent / "trainer", settings, seed, max_steps, context.progress
        ),
        train_dataset=context.train,
        data_collator=context.collator,
        callbacks=[*callbacks, *context.extra_callbacks],
    )
    trainer.train()
    return trainer


def save(context: MethodContext, model: Any, model_dir: Path) -> None:
    """Save the student and the tokenizer (main process only), int8 through ``save_quantized``."""
    from loyalkit.compression import block_weight_share, save_quantized

    if not context.is_main_process:
        return
    model_dir.mkdir(parents=True, exist_ok=True)
    # save_quantized also refuses what it cannot write (GPT-2's converted Conv1D layers).
    if getattr(model, "hf_quantizer", None) is not None or block_weight_share(model) > 0:
        save_quantized(model, model_dir)
    else:
        model.save_pretrained(model_dir)
    context.tokenizer.save_pretrained(model_dir)


def calibration_batches(context: MethodContext, rows: int) -> list[dict[str, Any]]:
    """The first ``rows`` training examples as padded batches of 32, without labels."""
    from loyalkit.compression.openvino_int8 import calibration_batches as first_rows

    return list(first_rows(context.train, context.collator, rows, batch_size=32))


def save_int8(context: MethodContext, model: Any, model_dir: Path, rows: int) -> None:
    """Write the float ``model`` as loyalkit's int8 for CPU deployment (OpenVINO + NNCF,
    :func:`~loyalkit.compression.export_int8`, calibrated on ``rows`` training examples) with
    the tokenizer; a float model saved there before (a Theseus export) is removed."""
    from loyalkit.compression import export_int8

    if not context.is_main_process:
        return
    model_dir.mkdir(parents=True, exist_ok=True)
    export_int8(model.eval(), model_dir, calibration_batches(context, rows))
    for stale in model_dir.glob("*.safetensors"):
        stale.unlink()
    context.tokenizer.save_pretrained(model_dir)


def teacher_copy(context: MethodContext) -> PreTrainedModel:
    """A trainable copy of the teacher."""
    model = copy.deepcopy(context.teacher)
    model.requires_grad_(True)
    return model.train()


def teacher_layers(context: MethodContext) -> int:
    return int(context.teacher.config.num_hidden_layers)


def check_student_layers(context: MethodContext, run: RunSpec, layers: int) -> None:
    teacher = teacher_layers(context)
    if layers >= teacher:
        raise ValueError(
            f"methods.{run.family}.student_layers: {layers} must be smaller than the teacher's "
            f"{teacher} layers"
        )
