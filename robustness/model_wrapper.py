"""A TextAttack model wrapper that pads each batch to its longest query, in inference mode.

TextAttack's ``HuggingFaceModelWrapper`` pads every query to ``tokenizer.model_max_length`` (512
when unset), so a ten-word sentence costs as much as a 512-token one, and it runs the model in
whatever mode it is in (dropout on during training). :class:`DynamicPaddingModelWrapper` tokenizes
exactly as that wrapper does (same special tokens, truncation and maximum length) but pads to the
longest query of the batch, runs the model in eval mode under ``torch.inference_mode`` and
restores the model's mode afterwards. With an attention mask the padding does not change the
logits beyond float rounding, so attacks give the same results, only faster
(``tests/test_model_wrapper.py`` compares both wrappers; ``benchmarks/RESULTS.md`` has the speed).

The class derives from TextAttack's wrapper, so it is defined when first needed: importing this
module does not import TextAttack. :func:`wrap_model` is the usual entry point.

Example:
    >>> from loyalkit.robustness.model_wrapper import wrap_model
    >>> # wrapper = wrap_model(model, tokenizer, batch_size=32)
    >>> # wrapper(["a fine film", "a dull film"])  # logits, shape (2, num_labels)
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from loyalkit.logits import eval_mode, model_logits

if TYPE_CHECKING:
    from loyalkit.robustness.textattack_setup import OfflineResources

# `DynamicPaddingModelWrapper` is also provided, by the module `__getattr__` below.
__all__ = [
    "TimeBudgetExceeded",
    "eval_mode",
    "max_query_length",
    "predict_logits",
    "wrap_model",
]

# What HuggingFaceModelWrapper does with a tokenizer that reports no maximum (1e30).
_UNSET_MAX_LENGTH = int(1e30)
_FALLBACK_MAX_LENGTH = 512


class TimeBudgetExceeded(Exception):
    """Raised by a wrapper queried after its ``deadline``: the attack in progress is abandoned."""


def max_query_length(tokenizer: Any) -> int:
    """The length TextAttack's wrapper truncates (and pads) to: the tokenizer's, or 512 if unset."""
    length = int(getattr(tokenizer, "model_max_length", _UNSET_MAX_LENGTH))
    return _FALLBACK_MAX_LENGTH if length >= _UNSET_MAX_LENGTH else length


def predict_logits(
    model: nn.Module, tokenizer: Any, inputs: Sequence[Any], batch_size: int = 32
) -> torch.Tensor:
    """``model``'s float logits on CPU for ``inputs`` (strings, or tuples for sentence pairs),
    tokenized as TextAttack's wrapper does but padded per batch, in eval mode, without autograd."""
    inputs = list(inputs)
    batches = (
        tokenizer(
            inputs[start : start + batch_size],
            add_special_tokens=True,
            padding=True,
            max_length=max_query_length(tokenizer),
            truncation=True,
            return_tensors="pt",
        )
        for start in range(0, len(inputs), batch_size)
    )
    return model_logits(model, batches)


@functools.cache
def _wrapper_class(base: type) -> type:
    """Define the wrapper on top of TextAttack's ``HuggingFaceModelWrapper`` (``base``)."""

    class DynamicPaddingModelWrapper(base):
        """Queries a Hugging Face classifier with dynamically padded, batched inputs.

        Args:
            model: a sequence classifier (``model(**tokenizer(...)).logits``).
            tokenizer: its tokenizer; pairs are passed as tuples, as TextAttack does.
            batch_size: the most queries per forward pass.
            deadline: a ``clock()`` value after which a query raises
                :class:`TimeBudgetExceeded` (set by the attack runner for its time budget).
            clock: the time source of ``deadline`` (default ``time.monotonic``).
        """

        def __init__(
            self,
            model: nn.Module,
            tokenizer: Any,
            batch_size: int = 32,
            deadline: float | None = None,
            clock: Callable[[], float] = time.monotonic,
        ) -> None:
            # The parent's __init__ only asserts types and stores these; any nn.Module that
            # returns `.logits` (quantized or wrapped models included) is accepted here.
            self.model = model
            self.tokenizer = tokenizer
            self.max_length = None
            self.batch_size = batch_size
            self.deadline = deadline
            self.clock = clock

        def __call__(self, text_input_list: Sequence[Any]) -> torch.Tensor:
            if self.deadline is not None and self.clock() > self.deadline:
                raise TimeBudgetExceeded("the attack's time budget is spent")
            return predict_logits(self.model, self.tokenizer, text_input_list, self.batch_size)

        def __repr__(self) -> str:
            return f"DynamicPaddingModelWrapper({type(self.model).__name__}, batch_size={self.batch_size})"

    return DynamicPaddingModelWrapper


def wrap_model(
    model: nn.Module,
    tokenizer: Any,
    batch_size: int = 32,
    *,
    resources: OfflineResources | None = None,
) -> Any:
    """A :class:`DynamicPaddingModelWrapper` of ``model`` (imports TextAttack offline first).

    Args:
        model: a Hugging Face sequence classifier (``torch.nn.Module`` returning ``.logits``).
        tokenizer: the model's tokenizer (a callable Hugging Face tokenizer).
        batch_size: the most queries per forward pass (positive).
        resources: where TextAttack's offline data lies (see ``textattack_setup``).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module, got {type(model).__name__}")
    if not callable(tokenizer):
        raise TypeError(f"`tokenizer` must be a callable tokenizer, got {type(tokenizer).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
    from loyalkit.robustness.textattack_setup import import_textattack

    textattack = import_textattack(resources)
    cls = _wrapper_class(textattack.models.wrappers.HuggingFaceModelWrapper)
    return cls(model, tokenizer, batch_size)


def __getattr__(name: str) -> Any:
    # `DynamicPaddingModelWrapper` itself, for isinstance checks; TextAttack is imported on access.
    if name == "DynamicPaddingModelWrapper":
        from loyalkit.robustness.textattack_setup import import_textattack

        return _wrapper_class(import_textattack().models.wrappers.HuggingFaceModelWrapper)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
