"""Which loyalkit callbacks cannot share one ``transformers.Trainer`` run, derived from what each
declares it changes, found when training begins.

Every loyalkit callback that changes the training or reports metrics under fixed names declares
what it modifies (:class:`DeclaresChanges`): ``changes()`` returns :class:`Change` s (the
training ``loss``, ``weights`` with the tensors concerned, ``precision``, the ``linear_layers`` it
rebuilds, the encoder's ``layer_stack``, an ``export`` of the model at train end, the ``metrics``
names it reports), ``unique`` says why two of its kind cannot share a run (``None``: they can when
their changes allow), and ``model_conflict(model)`` (optional) refuses a model it cannot work on.
The rules below read only those declarations, so a new callback declares its changes and edits
nothing here:

- two of one kind with a ``unique`` reason;
- two changes of the training ``loss``, the ``precision``, the ``linear_layers`` (modules swapped for
  others: head removal needs float ``nn.Linear`` layers, quantization replaces them) or the
  ``layer_stack``;
- two ``weights`` changes over a common tensor (disjoint ones combine);
- an ``export`` that another change ``blocks_export`` (a torch.ao int8 model cannot be saved);
- an ``export`` that ``needs_float`` (it quantizes the model itself) and a train-end ``precision``
  change, in either order;
- an ``export`` listed before a train-end change of the model: the export would be taken just
  before it (listed after, it includes it; a resume with
  ``restore_callback_states_from_checkpoint`` moves a restored callback last, the working order);
- two reports of the same ``metrics`` names.

Callbacks see neither the Trainer nor each other, only the arguments of each event: each calls
:func:`register_callback` first thing in ``on_train_begin``. The run's ``TrainerState`` (a fresh
object for every ``train()`` call) keeps the callbacks registered so far, in the Trainer's callback
order; each new one is checked against them and against the model, so a conflicting pair fails
before the first optimizer step with a ``ValueError`` that names both. Nothing outlives the run.

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

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

import torch
from torch import nn
from transformers import TrainerCallback, TrainerState

__all__ = ["Change", "DeclaresChanges", "Target", "conflict", "register_callback"]

Target = Literal[
    "loss", "weights", "precision", "linear_layers", "layer_stack", "export", "metrics"
]

# What two changes of one exclusive target do, after "both".
_EXCLUSIVE: dict[str, str] = {
    "loss": "replace the training loss",
    "precision": "quantize the model",
    "layer_stack": "replace the encoder's layer stack",
    "linear_layers": "rebuild nn.Linear layers",
}
# Train-end changes of the model an earlier export would miss.
_CHANGES_THE_MODEL = ("precision", "weights", "linear_layers")

# The attribute of the run's TrainerState holding the registered callbacks (not a dataclass field,
# so it is never written to trainer_state.json).
_REGISTRY = "_loyalkit_callbacks"


@dataclass(frozen=True)
class Change:
    """One thing a callback modifies, as it declares it in ``changes()``.

    Args:
        target: what is modified (see the module docstring).
        description: what the callback does to it, a phrase after the callback's name
            (``"quantizes the model to int8 at train end"``); for ``weights``, a clause saying
            why another change of the same tensors breaks it.
        fix: how to combine the two callbacks instead, added to the error.
        at_train_end: whether the change happens at train end (exports and rebuilds are ordered
            by it).
        weights: for ``target="weights"``, the tensors of a model it modifies.
        label: for ``target="weights"``, what those tensors are (``"the attention projection"``).
        blocks_export: why the model can no longer be exported after this change, if so.
        needs_float: for ``target="export"``, that it quantizes the float model itself, so a
            train-end ``precision`` change conflicts with it in either order.
        names: for ``target="metrics"``, the metric names it reports.
    """

    target: Target
    description: str
    fix: str = ""
    at_train_end: bool = False
    weights: Callable[[nn.Module], Iterable[torch.Tensor]] | None = None
    label: str = ""
    blocks_export: str = ""
    needs_float: bool = False
    names: tuple[str, ...] = ()


class DeclaresChanges(Protocol):
    """What a callback declares for :func:`conflict` (``model_conflict`` is optional)."""

    #: Why two of this kind cannot share a run; ``None`` when their ``changes()`` decide.
    unique: ClassVar[str | None]

    def changes(self) -> tuple[Change, ...]:
        """What this callback modifies, with its current settings."""
        ...


def register_callback(
    callback: TrainerCallback, state: TrainerState, model: nn.Module | None
) -> None:
    """Record ``callback`` in this training run; raise if it conflicts with one recorded before.

    Call it at the start of ``on_train_begin`` with the event's ``state`` and ``model``.
    """
    registered: list[TrainerCallback] = state.__dict__.setdefault(_REGISTRY, [])
    if any(earlier is callback for earlier in registered):
        return
    model_conflict = getattr(callback, "model_conflict", None)
    problem = model_conflict(model) if model_conflict is not None else None
    if problem is not None:
        raise ValueError(problem)
    for earlier in registered:
        problem = conflict(earlier, callback, model)
        if problem is not None:
            raise ValueError(problem)
    registered.append(callback)


def _name(callback: Any) -> str:
    return type(callback).__name__


def _changes(callback: Any) -> tuple[Change, ...]:
    declared = getattr(callback, "changes", None)
    return tuple(declared()) if declared is not None else ()


def _joined(*texts: str) -> str:
    return "; ".join(dict.fromkeys(t for t in texts if t))


def _weight_names(change: Change, model: nn.Module | None) -> dict[int, str]:
    """``id(tensor) -> name`` of the weights ``change`` modifies in ``model``."""
    if model is None or change.weights is None:
        return {}
    names = {id(p): name for name, p in model.named_parameters()}
    return {id(weight): names.get(id(weight), "?") for weight in change.weights(model)}


def conflict(earlier: Any, later: Any, model: nn.Module | None) -> str | None:
    """Why ``earlier`` and ``later`` (in callback order) cannot share a run on ``model``, or
    ``None``, derived from their declarations (module docstring)."""
    same = type(earlier) is type(later)
    first, second = _name(earlier), _name(later)
    pair = f"{first} and {'another ' if same else ''}{second} conflict"
    reason = getattr(later, "unique", None)
    if same and reason:
        return f"{pair}: {reason}"
    for a in _changes(earlier):
        for b in _changes(later):
            problem = _pair(pair, earlier, a, later, b, model)
            if problem is not None:
                return problem
    return None


def _pair(
    pair: str, earlier: Any, a: Change, later: Any, b: Change, model: nn.Module | None
) -> str | None:
    first, second = _name(earlier), _name(later)
    if a.target == b.target and a.target in _EXCLUSIVE:
        return (
            f"{pair}: both {_EXCLUSIVE[a.target]} ({first} {a.description}; {second} "
            f"{b.description}); {_joined(a.fix, b.fix) or 'use one of them'}"
        )
    if a.target == b.target == "weights":
        ids = _weight_names(a, model)
        shared = sorted(ids[i] for i in set(ids) & set(_weight_names(b, model)))
        if not shared:
            return None
        label = a.label or b.label
        return (
            f"{pair}: both prune {label + ' ' if label else ''}{shared[0]!r} "
            f"({_joined(a.description, b.description)}); {_joined(a.fix, b.fix)}"
        )
    for export, other in ((a, b), (b, a)):
        if export.target == "export" and other.blocks_export:
            return f"{pair}: {other.blocks_export}"
        if export.needs_float and other.target == "precision" and other.at_train_end:
            exporter, changer = (first, second) if export is a else (second, first)
            return (
                f"{pair}: {exporter} {export.description}, but {changer} {other.description}; "
                "the export quantizes the float model itself (for QAT, pass convert_at_end=False)"
            )
    if a.target == "export" and b.at_train_end and b.target in _CHANGES_THE_MODEL:
        return (
            f"{pair}: {first} {a.description} just before {second} {b.description}, so the "
            f"export would miss that change; list {first} after {second} in `callbacks`"
        )
    if a.target == b.target == "metrics":
        shared_names = [n for n in a.names if n in b.names]
        if shared_names:
            return f"{pair}: both would report {', '.join(shared_names)}; use one of them"
    return None
