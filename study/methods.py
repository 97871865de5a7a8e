"""The study's compression methods: each builds one student from the teacher and saves it.

Every method is a function ``(context, run, seed, model_dir) -> None`` that trains or compresses a
copy of the teacher with ``loyalkit.compression`` primitives and ``loyalkit.callbacks`` in a plain
``transformers.Trainer``, and saves the student (with the tokenizer) to ``model_dir`` in a format
:func:`loyalkit.study.measure.load_student` reads back: ``save_pretrained`` for float models,
:func:`~loyalkit.compression.save_quantized` (torchao int8, reloaded by a plain
``from_pretrained``) for int8 ones, ``config.pruned_heads`` (reloaded by
:func:`~loyalkit.compression.load_head_pruned`) after head pruning. ``METHODS`` maps a method
name to its function; the runner looks functions up there at call time.

Example (``context`` built by the runner from the fine-tuned teacher and the tokenized task)::

    from loyalkit.study.config import preset
    run = next(r for r in preset("quick").runs() if r.method == "kd-logit")
    METHODS[run.family](context, run, seed=0, model_dir=Path("kd/model"))
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import (
    AutoModelForSequenceClassification,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from loyalkit.study.config import (
    CombinedSettings,
    HeadPruningSettings,
    HiddenKDSettings,
    Int8PTQSettings,
    Int8QATSettings,
    KLKDSettings,
    LogitKDSettings,
    MagnitudePruningSettings,
    RunSpec,
    TheseusSettings,
)

__all__ = [
    "METHODS",
    "MethodContext",
    "train_steps",
    "training_arguments",
    "training_log_callback",
]

logger = logging.getLogger(__name__)


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


def _steps(context: MethodContext, settings: Any) -> int:
    return train_steps(
        len(context.train), settings.epochs, settings.batch_size, context.num_processes
    )


def training_arguments(
    folder: Path, settings: Any, seed: int, steps: int, progress: bool = True
) -> TrainingArguments:
    """Arguments of every training run: linear decay after 10% warm-up, no checkpoints."""
    import torch

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

    class TrainingLog(TrainerCallback):
        """Copies the Trainer's logs (loss, learning rate, sparsity...) into the study log."""

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if logs and state.is_world_process_zero:
                logger.info("step %d: %s", state.global_step, logs)

    return TrainingLog()


def _train(
    context: MethodContext,
    model: PreTrainedModel,
    settings: Any,
    seed: int,
    model_dir: Path,
    callbacks: list[TrainerCallback],
    steps: int | None = None,
) -> Trainer:
    if steps is None:
        steps = _steps(context, settings)
    trainer = Trainer(
        model=model,
        args=training_arguments(
            model_dir.parent / "trainer", settings, seed, steps, context.progress
        ),
        train_dataset=context.train,
        data_collator=context.collator,
        callbacks=[*callbacks, *context.extra_callbacks],
    )
    trainer.train()
    return trainer


def _save(context: MethodContext, model: PreTrainedModel, model_dir: Path) -> None:
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


def _teacher_copy(context: MethodContext) -> PreTrainedModel:
    model = copy.deepcopy(context.teacher)
    model.requires_grad_(True)
    return model.train()


def _teacher_layers(context: MethodContext) -> int:
    return int(context.teacher.config.num_hidden_layers)


def _check_student_layers(context: MethodContext, run: RunSpec, layers: int) -> None:
    teacher = _teacher_layers(context)
    if layers >= teacher:
        raise ValueError(
            f"methods.{run.family}.student_layers: {layers} must be smaller than the teacher's "
            f"{teacher} layers"
        )


def int8_ptq(context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
    """int8 dynamic post-training quantization (torchao) of the teacher, no training."""
    from loyalkit.compression import quantize_dynamic_int8

    settings = run.settings
    assert isinstance(settings, Int8PTQSettings)
    model = copy.deepcopy(context.teacher).eval()
    quantize_dynamic_int8(
        model, backend="torchao", symmetric_activations=settings.symmetric_activations
    )
    _save(context, model, model_dir)


def int8_qat(context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
    """Fine-tune the teacher with int8 fake quantization; the real int8 model at the end."""
    from loyalkit.callbacks import QuantizationAwareTrainingCallback

    assert isinstance(run.settings, Int8QATSettings)
    trainer = _train(
        context,
        _teacher_copy(context),
        run.settings,
        seed,
        model_dir,
        [QuantizationAwareTrainingCallback()],
    )
    _save(context, trainer.model, model_dir)  # type: ignore[arg-type]


def magnitude_pruning(context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
    """Fine-tune while pruning the encoder's Linear weights to ``run.sparsity`` (cubic schedule)."""
    from loyalkit.callbacks import MagnitudePruningCallback
    from loyalkit.compression import CubicSchedule

    settings = run.settings
    assert isinstance(settings, MagnitudePruningSettings) and run.sparsity is not None
    steps = _steps(context, settings)
    end = max(1, round(settings.ramp_share * steps))
    schedule = CubicSchedule(
        target_sparsity=run.sparsity, start_step=0, end_step=end, frequency=max(1, end // 10)
    )
    callback = MagnitudePruningCallback(schedule, scope=settings.scope)
    trainer = _train(
        context, _teacher_copy(context), settings, seed, model_dir, [callback], steps=steps
    )
    _save(context, trainer.model, model_dir)  # type: ignore[arg-type]


def head_pruning(context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
    """Silence ``share`` of the heads before the first step, fine-tune, remove them at the end."""
    from loyalkit.callbacks import HeadPruningCallback

    settings = run.settings
    assert isinstance(settings, HeadPruningSettings)
    callback = HeadPruningCallback(
        schedule={0: settings.share},
        importance=settings.importance,
        num_batches=settings.num_batches,
    )
    trainer = _train(context, _teacher_copy(context), settings, seed, model_dir, [callback])
    _save(context, trainer.model, model_dir)  # type: ignore[arg-type]


def _kd_student(context: MethodContext, run: RunSpec, layers: int) -> PreTrainedModel:
    """The teacher's bottom ``layers`` layers (with its embeddings and head) as the student."""
    _check_student_layers(context, run, layers)
    depth: dict[str, Any] = {"num_hidden_layers": layers}
    layer_types = getattr(context.teacher.config, "layer_types", None)
    if isinstance(layer_types, list):  # ModernBERT, Qwen2: one type per layer, checked on loading
        depth["layer_types"] = layer_types[:layers]
    student = AutoModelForSequenceClassification.from_pretrained(context.teacher_dir, **depth)
    return student.train()


def distillation(context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
    """Downstream KD to fewer layers: logit KD, pure-KL KD or logit + hidden-state KD (PKD)."""
    from loyalkit.callbacks import DistillationCallback

    settings = run.settings
    assert isinstance(settings, (LogitKDSettings, KLKDSettings))
    student = _kd_student(context, run, settings.student_layers)
    options: dict[str, Any] = {"temperature": settings.temperature}
    if isinstance(settings, HiddenKDSettings):
        ratio = _teacher_layers(context) / settings.student_layers
        options.update(
            alpha=settings.alpha,
            hidden_layer_map={i: round(i * ratio) for i in range(1, settings.student_layers + 1)},
            hidden_weight=settings.hidden_weight,
            hidden_normalize=settings.hidden_normalize,
        )
    elif isinstance(settings, LogitKDSettings):
        options.update(alpha=settings.alpha, cache_teacher_logits=True)
    else:  # pure KL: alpha = 1, the hard labels are not used
        options.update(alpha=1.0, cache_teacher_logits=True)
    callback = DistillationCallback(context.teacher, **options)
    trainer = _train(context, student, settings, seed, model_dir, [callback])
    _save(context, trainer.model, model_dir)  # type: ignore[arg-type]


def _replacement(context: MethodContext, run: RunSpec, seed: int) -> tuple[PreTrainedModel, Any]:
    from loyalkit.compression import (
        ConstantReplacementSchedule,
        LinearReplacementSchedule,
        prepare_module_replacement,
    )

    settings = run.settings
    assert isinstance(settings, TheseusSettings)
    _check_student_layers(context, run, settings.student_layers)
    model = copy.deepcopy(context.teacher).train()
    prepare_module_replacement(model, settings.student_layers, successor_init="bottom", seed=seed)
    steps = _steps(context, settings)
    schedule: Any
    if settings.slope is not None:
        schedule = LinearReplacementSchedule(slope=settings.slope, intercept=settings.intercept)
    else:
        schedule = ConstantReplacementSchedule(
            rate=settings.replacement_rate,
            replacing_steps=round(settings.replacing_share * steps),
        )
    return model, schedule


def theseus(context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
    """BERT-of-Theseus: cross-entropy only; the exported successor is the student."""
    from loyalkit.callbacks import ModuleReplacementCallback

    model, schedule = _replacement(context, run, seed)
    export = ModuleReplacementCallback(schedule, seed=seed, export_dir=str(model_dir))
    _train(context, model, run.settings, seed, model_dir, [export])
    if context.is_main_process:
        context.tokenizer.save_pretrained(model_dir)


def combined(context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
    """Logit KD + module replacement, then int8 PTQ: the exported successor is int8."""
    from loyalkit.callbacks import (
        DistillationCallback,
        ModuleReplacementCallback,
        PostTrainingQuantizationCallback,
    )

    settings = run.settings
    assert isinstance(settings, CombinedSettings)
    model, schedule = _replacement(context, run, seed)
    callbacks: list[TrainerCallback] = [
        DistillationCallback(
            context.teacher,
            temperature=settings.temperature,
            alpha=settings.alpha,
            cache_teacher_logits=True,
        ),
        PostTrainingQuantizationCallback(backend="torchao"),
        # Listed after the quantization: the export is the int8 successor.
        ModuleReplacementCallback(schedule, seed=seed, export_dir=str(model_dir)),
    ]
    _train(context, model, settings, seed, model_dir, callbacks)
    if context.is_main_process:
        context.tokenizer.save_pretrained(model_dir)


MethodFunction = Callable[[MethodContext, RunSpec, int, Path], None]

#: Method name (``RunSpec.family``) -> the function building its student.
METHODS: dict[str, MethodFunction] = {
    "int8-ptq": int8_ptq,
    "int8-qat": int8_qat,
    "magnitude-pruning": magnitude_pruning,
    "head-pruning": head_pruning,
    "kd-logit": distillation,
    "kd-kl": distillation,
    "kd-hidden": distillation,
    "theseus": theseus,
    "combined": combined,
}
