"""One loop from a model to its logits over a sequence of batches, shared by the study, the
loyalty callback and the attacks' model wrapper.

Each caller builds its batches its own way (a dataset and a collator, the Trainer's evaluation
dataloader, a tokenizer over raw texts); the forward passes, the eval mode, the absence of autograd
and the float32 CPU result are the same everywhere. It lives in the ground layer (``loyalkit/``)
because TextAttack's isolated worker imports the model wrapper with only the ``loyalkit`` and
``loyalkit.robustness`` folders registered (``robustness/attack_worker.py``).

Example:
    >>> import torch
    >>> from loyalkit.logits import model_logits
    >>> model = torch.nn.Linear(3, 2)  # returns a tensor: taken as the logits
    >>> model_logits(model, [{"input": torch.ones(4, 3)}, {"input": torch.ones(1, 3)}]).shape
    torch.Size([5, 2])
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["eval_mode", "model_device", "model_logits"]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd for the duration; the model's previous mode is restored."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    """The device of ``model``'s first parameter, else of its first buffer, else the CPU (a model
    run by another runtime, such as an OpenVINO int8 classifier, holds no parameters)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")


def model_logits(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    each: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``model``'s float32 logits on CPU over ``batches`` (keyword inputs), concatenated in order.

    Tensors move to the model's device; the model runs in :func:`eval_mode`. Its output's
    ``logits`` (or its first element, or the output itself when it is a tensor) is taken.
    ``each`` maps every batch's logits first (for instance accelerate's ``gather_for_metrics``).
    An empty ``batches`` gives an empty tensor.
    """
    device = model_device(model)
    outputs = []
    with eval_mode(model):
        for batch in batches:
            inputs = {
                k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
            }
            result = model(**inputs)
            if not isinstance(result, torch.Tensor):
                result = result.logits if hasattr(result, "logits") else result[0]
            logits = result.float()
            outputs.append((each(logits) if each is not None else logits).cpu())
    return torch.cat(outputs) if outputs else torch.empty(0)
