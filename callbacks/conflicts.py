"""Which loyalkit callbacks cannot share one ``transformers.Trainer`` run, found when training begins.

Callbacks see neither the Trainer nor each other, only the arguments of each event. Every loyalkit
callback that changes the model calls :func:`register_callback` first thing in ``on_train_begin``.
The run's ``TrainerState`` (a fresh object for every ``train()`` call, handed to every callback of
that run) keeps the loyalkit callbacks registered so far, in the Trainer's callback order; each new
one is checked against them and against the model, so a conflicting pair fails before the first
optimizer step with a ``ValueError`` that names both callbacks. Nothing outlives the run.

Conflicts (anything else combines; see the README's composition section):

- two of the same kind, except :class:`~loyalkit.callbacks.MagnitudePruningCallback` s over
  disjoint weights (each would undo what the other does);
- ``PostTrainingQuantizationCallback`` with ``QuantizationAwareTrainingCallback``;
- ``MagnitudePruningCallback`` with ``HeadPruningCallback`` when the magnitude masks cover the
  attention projections whose heads are silenced and removed;
- ``HeadPruningCallback`` that removes heads at train end with either quantization callback (the
  heads would be cut out of int8 weights, or out of fake-quantized layers that then stay float);
  ``HeadPruningCallback`` on a model prepared for module replacement (its layers are
  predecessor/successor blocks);
- ``ModuleReplacementCallback(export_dir=...)`` listed before a quantization callback: the export
  would be taken from the float weights just before they are quantized. Listed after it, the export
  is the int8 successor. (A resume with ``restore_callback_states_from_checkpoint`` moves the
  restored ``ModuleReplacementCallback`` last, which is the working order.) The ``torch.ao``
  backend's models cannot be exported at all.

Example:
    >>> from loyalkit.callbacks import (PostTrainingQuantizationCallback,
    ...                                 QuantizationAwareTrainingCallback)
    >>> from transformers import TrainerState
    >>> state = TrainerState()
    >>> register_callback(QuantizationAwareTrainingCallback(), state, model=None)
    >>> register_callback(PostTrainingQuantizationCallback(), state, model=None)
    Traceback (most recent call last):
    ...
    ValueError: QuantizationAwareTrainingCallback and PostTrainingQuantizationCallback conflict: ...
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerState

__all__ = ["register_callback"]

# The attribute of the run's TrainerState holding the registered callbacks (not a dataclass field,
# so it is never written to trainer_state.json).
_REGISTRY = "_loyalkit_callbacks"

_SINGLE_USE_REASONS = {
    "DistillationCallback": "both would replace the training loss; use one with the combined "
    "settings",
    "ModuleReplacementCallback": "both would set the replacement rate of the same blocks",
    "HeadPruningCallback": "both would score and remove the same attention heads; put every step "
    "in one schedule",
    "PostTrainingQuantizationCallback": "the model would be quantized twice",
    "QuantizationAwareTrainingCallback": "the model would be fake-quantized and converted twice",
}


def register_callback(
    callback: TrainerCallback, state: TrainerState, model: nn.Module | None
) -> None:
    """Record ``callback`` in this training run; raise if it conflicts with one recorded before.

    Call it at the start of ``on_train_begin`` with the event's ``state`` and ``model``.
    """
    registered: list[TrainerCallback] = state.__dict__.setdefault(_REGISTRY, [])
    if any(earlier is callback for earlier in registered):
        return
    problem = _model_conflict(callback, model)
    if problem is not None:
        raise ValueError(problem)
    for earlier in registered:
        problem = _pair_conflict(earlier, callback, model)
        if problem is not None:
            raise ValueError(problem)
    registered.append(callback)


def _name(callback: TrainerCallback) -> str:
    return type(callback).__name__


def _is_prepared_for_module_replacement(model: nn.Module | None) -> bool:
    from loyalkit.compression.module_replacement import ModuleReplacementLayers

    return model is not None and any(
        isinstance(module, ModuleReplacementLayers) for module in model.modules()
    )


def _model_conflict(callback: TrainerCallback, model: nn.Module | None) -> str | None:
    from loyalkit.callbacks.head_pruning import HeadPruningCallback

    if isinstance(callback, HeadPruningCallback) and _is_prepared_for_module_replacement(model):
        return (
            "HeadPruningCallback conflicts with module replacement (ModuleReplacementCallback / "
            "prepare_module_replacement): the encoder's layers are predecessor/successor blocks "
            "whose heads cannot be removed; prune the heads of the exported successor instead"
        )
    return None


def _pruned_weight_ids(callback: Any, model: nn.Module | None) -> dict[int, str]:
    """``id(weight) -> name`` of the weights a magnitude or head pruning callback changes."""
    from loyalkit.callbacks.head_pruning import HeadPruningCallback
    from loyalkit.compression.head_pruning import head_weights
    from loyalkit.compression.magnitude_pruning import prunable_weights

    if model is None:
        return {}
    names = {id(p): name for name, p in model.named_parameters()}
    if isinstance(callback, HeadPruningCallback):
        weights = head_weights(model)
    else:
        weights = list(prunable_weights(model, callback.module_pattern).values())
    return {id(weight): names.get(id(weight), "?") for weight in weights}


def _overlap(first: Any, second: Any, model: nn.Module | None) -> str | None:
    first_ids = _pruned_weight_ids(first, model)
    shared = sorted(first_ids[i] for i in set(first_ids) & set(_pruned_weight_ids(second, model)))
    return shared[0] if shared else None


def _pair_conflict(earlier: Any, later: Any, model: nn.Module | None) -> str | None:
    from loyalkit.callbacks.head_pruning import HeadPruningCallback
    from loyalkit.callbacks.magnitude_pruning import MagnitudePruningCallback
    from loyalkit.callbacks.module_replacement import ModuleReplacementCallback
    from loyalkit.callbacks.quantization import (
        PostTrainingQuantizationCallback,
        QuantizationAwareTrainingCallback,
    )

    pair = f"{_name(earlier)} and {_name(later)} conflict"
    kinds = {type(earlier), type(later)}
    quantization = (PostTrainingQuantizationCallback, QuantizationAwareTrainingCallback)

    if type(earlier) is type(later):
        reason = _SINGLE_USE_REASONS.get(_name(later))
        if reason is not None:
            return f"{_name(earlier)} and another {_name(later)} conflict: {reason}"
        if isinstance(later, MagnitudePruningCallback):
            shared = _overlap(earlier, later, model)
            if shared is not None:
                return (
                    f"{_name(earlier)} and another {_name(later)} conflict: both prune {shared!r} "
                    "(each recomputes its masks and undoes the other's sparsity); give them "
                    "disjoint `module_pattern`s or use one callback"
                )
        return None
    if kinds == set(quantization):
        return (
            f"{pair}: QuantizationAwareTrainingCallback already produces the int8 model; use one "
            "of them"
        )
    if kinds == {MagnitudePruningCallback, HeadPruningCallback}:
        shared = _overlap(earlier, later, model)
        if shared is not None:
            return (
                f"{pair}: both prune the attention projection {shared!r}, and head removal "
                "changes the shapes the magnitude masks were computed for; restrict "
                "MagnitudePruningCallback with `module_pattern` (e.g. to the feed-forward "
                "layers) or use one of them"
            )
        return None
    if HeadPruningCallback in kinds and kinds & set(quantization):
        head = earlier if isinstance(earlier, HeadPruningCallback) else later
        if head.config.remove_at_train_end:
            return (
                f"{pair}: both rebuild the attention layers at train end (head removal needs "
                "float nn.Linear layers, quantization replaces them); pass "
                "remove_at_train_end=False to HeadPruningCallback, or remove the heads "
                "(loyalkit.compression.prune_heads) and quantize after training"
            )
        return None
    if ModuleReplacementCallback in kinds and kinds & set(quantization):
        replacement = earlier if isinstance(earlier, ModuleReplacementCallback) else later
        quantizer = later if replacement is earlier else earlier
        if replacement.export_dir is None:
            return None
        if getattr(quantizer, "backend", None) == "torch.ao":
            return (
                f"{pair}: a torch.ao int8 model cannot be exported or saved; use the default "
                "torchao backend"
            )
        converts = getattr(quantizer, "convert_at_end", True)
        if replacement is earlier and converts:
            return (
                f"{pair}: ModuleReplacementCallback would export the successor at train end just "
                f"before {_name(quantizer)} quantizes it, so the export would not be int8; list "
                f"ModuleReplacementCallback after {_name(quantizer)} in `callbacks`"
            )
    return None
