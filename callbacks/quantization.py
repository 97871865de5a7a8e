"""int8 quantization inside a plain ``transformers.Trainer``: post-training and quantization-aware.

Thin adapters over :mod:`loyalkit.compression.quantization`; both quantize ``trainer.model`` in
place, so after ``trainer.train()`` the user holds the int8 model, ``trainer.evaluate()`` measures
it and ``trainer.save_model(path)`` (or :func:`~loyalkit.compression.save_quantized`) writes int8
weights that a plain ``from_pretrained(path)`` reloads quantized. transformers 5 writes them as
safetensors. transformers 4.57 writes torchao int8 weights only as a pickle (``pytorch_model.bin``)
and its ``save_model`` follows ``TrainingArguments.save_safetensors``, an argument 5.x no longer
accepts: so once the model is int8, the callbacks set ``args.save_safetensors = False`` there (with
a log message), and the same user code saves on both versions. The ``torch.ao`` backend's models
cannot be saved.

``QuantizationAwareTrainingCallback`` inserts fake quantization in ``on_train_begin``. The Trainer
builds its optimizer before that event, which is safe here because the fake-quantized layers keep
the original weight ``Parameter`` objects (no new parameters are created). Checkpoints written
during QAT hold the float ("latent") weights under the usual names: ``from_pretrained`` gives the
float model, and ``prepare_qat`` on it restores the fake-quantized predictions exactly.

Example:
    >>> from loyalkit.callbacks import (PostTrainingQuantizationCallback,
    ...                                 QuantizationAwareTrainingCallback)
    >>> ptq = PostTrainingQuantizationCallback()  # int8 at the end of training
    >>> qat = QuantizationAwareTrainingCallback()  # fake int8 while training, real int8 at the end
    >>> # Trainer(model=model, args=args, train_dataset=data, callbacks=[qat]).train()
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from loyalkit.callbacks.conflicts import Change, register_callback
from loyalkit.compression.quantization import (
    Int8Backend,
    Int8Quantization,
    check_int8_options,
    convert_qat,
    is_fake_quantized,
    prepare_qat,
    quantize_dynamic_int8,
    supports_safetensors,
)

__all__ = [
    "PostTrainingQuantizationCallback",
    "PostTrainingQuantizationConfig",
    "QuantizationAwareTrainingCallback",
    "QuantizationAwareTrainingConfig",
]

logger = logging.getLogger(__name__)

_CONFLICT = (
    "PostTrainingQuantizationCallback and QuantizationAwareTrainingCallback conflict: "
    "QuantizationAwareTrainingCallback already produces the int8 model; use one of them"
)


def _model(kwargs: dict[str, Any]) -> nn.Module:
    model = kwargs.get("model")
    if not isinstance(model, nn.Module):
        raise ValueError("the Trainer passed no model to the quantization callback")
    return model


def _save_as_supported(args: TrainingArguments, model: nn.Module) -> None:
    """Let a later ``trainer.save_model`` write the int8 model on transformers 4.57 too."""
    # Only 4.57 has the argument; there it would make save_model raise for torchao int8 weights.
    # Models without a quantizer (torch.ao, plain modules) cannot be saved with from_pretrained.
    saveable = getattr(model, "hf_quantizer", None) is not None
    if saveable and getattr(args, "save_safetensors", False) and not supports_safetensors(model):
        args.save_safetensors = False  # type: ignore[attr-defined]
        logger.warning(
            "int8 model: set TrainingArguments.save_safetensors=False, since this transformers "
            "version saves torchao int8 weights only as pytorch_model.bin"
        )


@dataclass(frozen=True)
class PostTrainingQuantizationConfig:
    """The settings of :class:`PostTrainingQuantizationCallback`; validated once, here."""

    backend: Int8Backend = "auto"
    symmetric_activations: bool = True

    def __post_init__(self) -> None:
        check_int8_options(self.backend, self.symmetric_activations)

    def as_arguments(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready."""
        return asdict(self)


@dataclass(frozen=True)
class QuantizationAwareTrainingConfig:
    """The settings of :class:`QuantizationAwareTrainingCallback`; validated once, here."""

    convert_at_end: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.convert_at_end, bool):
            raise TypeError("`convert_at_end` must be a bool")

    def as_arguments(self) -> dict[str, Any]:
        """The constructor arguments, JSON-ready."""
        return asdict(self)


class PostTrainingQuantizationCallback(TrainerCallback):
    """Dynamic int8 quantization of the model's Linear layers when training ends.

    ``backend`` is passed to :func:`~loyalkit.compression.quantize_dynamic_int8`; ``result`` holds
    what was done (backend used, layer count) after training.
    """

    unique: ClassVar[str | None] = "the model would be quantized twice"

    def __init__(self, backend: Int8Backend = "auto", symmetric_activations: bool = True) -> None:
        self.config = PostTrainingQuantizationConfig(backend, symmetric_activations)
        self.result: Int8Quantization | None = None

    @property
    def backend(self) -> Int8Backend:
        return self.config.backend

    @property
    def symmetric_activations(self) -> bool:
        return self.config.symmetric_activations

    def changes(self) -> tuple[Change, ...]:
        """What this callback modifies (see :mod:`loyalkit.callbacks.conflicts`)."""
        blocks = (
            "a torch.ao int8 model cannot be exported or saved; use the default torchao backend"
            if self.backend == "torch.ao"
            else ""
        )
        return (
            Change(
                "precision",
                "quantizes the model to int8 at train end",
                at_train_end=True,
                blocks_export=blocks,
            ),
            Change(
                "linear_layers", "replaces them with int8 layers at train end", at_train_end=True
            ),
        )

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = _model(kwargs)
        register_callback(self, state, model)
        if is_fake_quantized(model):
            raise ValueError(_CONFLICT)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = _model(kwargs)
        if is_fake_quantized(model) or getattr(model, "hf_quantizer", None) is not None:
            raise ValueError(_CONFLICT)
        model.eval()
        self.result = quantize_dynamic_int8(
            model, backend=self.backend, symmetric_activations=self.symmetric_activations
        )
        _save_as_supported(args, model)


class QuantizationAwareTrainingCallback(TrainerCallback):
    """int8 fake quantization during training; the real int8 model at the end.

    ``convert_at_end=False`` leaves the fake-quantized float model (to keep training it later);
    convert it with :func:`~loyalkit.compression.convert_qat`. A model already passed through
    :func:`~loyalkit.compression.prepare_qat` before the Trainer was built is used as it is.
    """

    unique: ClassVar[str | None] = "the model would be fake-quantized and converted twice"

    def __init__(self, convert_at_end: bool = True) -> None:
        self.config = QuantizationAwareTrainingConfig(convert_at_end)
        self.result: Int8Quantization | None = None

    @property
    def convert_at_end(self) -> bool:
        return self.config.convert_at_end

    def changes(self) -> tuple[Change, ...]:
        """What this callback modifies (see :mod:`loyalkit.callbacks.conflicts`)."""
        converts = self.convert_at_end
        return (
            Change(
                "precision",
                "fake-quantizes the model while training"
                + (" and converts it to int8 at train end" if converts else ""),
                fix="QuantizationAwareTrainingCallback already produces the int8 model; use one "
                "of them",
                at_train_end=converts,
            ),
            Change(
                "linear_layers",
                "replaces them with fake-quantized layers while training"
                + (" and int8 ones at train end" if converts else ""),
                at_train_end=converts,
            ),
        )

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        model = _model(kwargs)
        register_callback(self, state, model)
        if not is_fake_quantized(model):
            prepare_qat(model)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.convert_at_end:
            model = _model(kwargs)
            model.eval()
            self.result = convert_qat(model)
            _save_as_supported(args, model)
