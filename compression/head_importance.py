"""How much each attention head matters: gradient importance (Michel et al. 2019) and magnitude.

Both functions return a ``(layers, original heads)`` float tensor, ``NaN`` for heads already
removed, ready for :func:`loyalkit.compression.select_heads_to_prune`.

Gradient importance (Michel, Levy and Neubig, "Are Sixteen Heads Really Better than One?",
NeurIPS 2019): a gate ``xi_h`` multiplies head ``h``'s context, and
``I_h = E_x |dL(x) / d xi_h|`` at ``xi = 1``, normalised per layer by the L2 norm. transformers 4
exposed the gate as ``head_mask`` (it scales the attention probabilities, hence the context);
transformers 5 removed it, so here a forward pre-hook on each attention output projection scales
the per-head slices of its input: the same product, the same gradient, on both versions. The gate
has one value per example, so one backward pass gives each example's own gradient and the
absolute value is taken per example, as the paper defines it. The gates (:func:`input_gates`)
and the loop over batches (:func:`gate_importance`) take any module and unit width:
:mod:`loyalkit.compression.ffn_importance` gates feed-forward neurons with them, and
:func:`unit_norms` gives both the magnitude scores.

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from loyalkit.compression import gradient_head_importance, magnitude_head_importance
    >>> _ = torch.manual_seed(0)
    >>> config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
    ...                     num_attention_heads=4, intermediate_size=32)
    >>> model = BertForSequenceClassification(config).eval()
    >>> batch = {"input_ids": torch.randint(5, 50, (3, 7)), "labels": torch.tensor([0, 1, 1])}
    >>> gradient_head_importance(model, [batch]).shape
    torch.Size([2, 4])
    >>> magnitude_head_importance(model).shape
    torch.Size([2, 4])
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from loyalkit.compression.attention_layout import Projection, head_parts, num_units
from loyalkit.compression.head_pruning import remaining_heads

__all__ = [
    "gate_importance",
    "gradient_head_importance",
    "head_gates",
    "input_gates",
    "magnitude_head_importance",
    "unit_norms",
]


def _normalise_per_layer(scores: torch.Tensor) -> torch.Tensor:
    """Divide each layer's scores by their L2 norm (NaN entries, removed heads, left out)."""
    norms = torch.nan_to_num(scores, nan=0.0).norm(dim=1, keepdim=True)
    return torch.where(norms > 0, scores / norms.clamp_min(torch.finfo(scores.dtype).tiny), scores)


def _scatter(model: nn.Module, per_layer: list[torch.Tensor]) -> torch.Tensor:
    """Place each layer's scores (remaining heads only) at their original head index."""
    num_heads = num_units(model)
    kept = remaining_heads(model)
    out = torch.full((len(kept), num_heads), float("nan"), dtype=torch.float64)
    for layer, (heads, values) in enumerate(zip(kept, per_layer, strict=True)):
        out[layer, heads] = values.detach().double().cpu()
    return out


@contextmanager
def input_gates(modules: Sequence[tuple[nn.Module, int]]) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward of every ``(module, width)`` multiplies its input's last axis,
    in groups of ``width`` entries (one unit each), by a fresh gate of ones.

    Yields a list that each forward pass appends to: one ``(batch, units)`` gate per module, in
    forward order, requiring grad. Differentiate a loss with respect to them.
    """
    gates: list[torch.Tensor] = []
    handles = []

    def make_hook(width: int) -> Any:
        def gate_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            context = args[0]
            batch, units = context.shape[0], context.shape[-1] // width
            gate = torch.ones(batch, units, dtype=context.dtype, device=context.device)
            gate.requires_grad_(True)
            gates.append(gate)
            shape = (*context.shape[:-1], units, width)
            view = (batch,) + (1,) * (context.dim() - 2) + (units, 1)
            gated = (context.view(shape) * gate.view(view)).view(context.shape)
            return (gated, *args[1:])

        return gate_input

    try:
        for module, width in modules:
            handles.append(module.register_forward_pre_hook(make_hook(width)))
        yield gates
    finally:
        for handle in handles:
            handle.remove()


def _head_gated(model: nn.Module) -> list[tuple[nn.Module, int]]:
    return [(parts.output.module, parts.unit_width) for parts in head_parts(model)]


@contextmanager
def head_gates(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward multiplies every head's context by a fresh gate of ones.

    Yields a list that each forward pass appends to: one ``(batch, heads)`` gate per layer,
    in layer order, requiring grad. Differentiate a loss with respect to them.
    """
    with input_gates(_head_gated(model)) as gates:
        yield gates


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def gate_importance(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    gated: Sequence[tuple[nn.Module, int]],
) -> list[torch.Tensor]:
    """``E_x |dL(x)/d xi|`` of every unit of every gated ``(module, width)`` (see :func:`input_gates`).

    ``batches`` are model inputs with ``labels``; ``model(**batch).loss`` must be the mean of the
    examples' losses. Runs in eval mode (no dropout) and leaves parameter gradients untouched
    (``torch.autograd.grad`` on the gates only). Returns one float tensor of units per module.
    """
    device = next(model.parameters()).device
    totals: list[torch.Tensor] | None = None
    examples = 0
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            if not isinstance(batch, Mapping) or batch.get("labels") is None:
                raise ValueError(
                    "batches: every batch must be a mapping of model inputs with 'labels'"
                )
            with torch.enable_grad(), input_gates(gated) as gates:
                loss = model(**_to_device(batch, device)).loss
                if loss is None or len(gates) != len(gated):
                    raise ValueError(
                        "batches: the model returned no loss for a batch with 'labels'"
                    )
                size = gates[0].shape[0]
                # mean loss * batch size = sum of per-example losses: d/d gate[b] is example b's own
                grads = torch.autograd.grad(loss * size, gates)
            per_module = [g.abs().sum(dim=0).detach() for g in grads]
            totals = (
                per_module
                if totals is None
                else [t + p for t, p in zip(totals, per_module, strict=True)]
            )
            examples += size
    finally:
        model.train(was_training)
    if totals is None:
        raise ValueError("batches: expected at least one batch, got none")
    return [t / examples for t in totals]


def gradient_head_importance(
    model: nn.Module,
    batches: Iterable[Mapping[str, Any]],
    *,
    normalize: bool = True,
) -> torch.Tensor:
    """Michel et al.'s importance ``E_x |dL(x)/d xi_h|`` of every head, over ``batches``.

    ``batches`` are model inputs with ``labels`` (e.g. a ``DataLoader`` over a tokenized
    dataset); ``model(**batch).loss`` must be the mean of the examples' losses, as for sequence
    classification. Runs in eval mode (no dropout) and leaves parameter gradients untouched
    (``torch.autograd.grad`` on the gates only). ``normalize`` divides each layer by its L2 norm,
    as in the paper. Returns float64 ``(layers, original heads)``, ``NaN`` for removed heads.
    """
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize: expected a bool, got {normalize!r}")
    scores = _scatter(model, gate_importance(model, batches, _head_gated(model)))
    return _normalise_per_layer(scores) if normalize else scores


@torch.no_grad()
def unit_norms(projections: Sequence[Projection], units: int) -> torch.Tensor:
    """The L2 norm of each of ``units`` units over all its weights in ``projections`` (float64).

    Each projection's weight runs over the units along its :attr:`Projection.axis`, in
    ``sections`` equal slices of ``width`` entries per unit (biases left out).
    """
    squares = torch.zeros(units, dtype=torch.float64)
    for projection in projections:
        weight = projection.module.weight.double().movedim(projection.axis, 0)
        # (sections, units, width, other axis): every section's slice of each unit
        blocks = weight.reshape(projection.sections, units, projection.width, -1)
        squares += blocks.pow(2).sum(dim=(0, 2, 3)).cpu()
    return squares.sqrt()


def _current(parts: Any) -> int:
    return int(parts.output.module.weight.shape[parts.output.axis]) // parts.unit_width


@torch.no_grad()
def magnitude_head_importance(model: nn.Module, *, normalize: bool = False) -> torch.Tensor:
    """The L2 norm of each head's weights: its query, key and value rows and output columns.

    Under grouped-query attention the unit is a key/value group with all its query heads.

    Biases are left out. ``normalize`` divides each layer by its L2 norm. Returns float64
    ``(layers, original heads)``, ``NaN`` for removed heads.
    """
    if not isinstance(normalize, bool):
        raise TypeError(f"normalize: expected a bool, got {normalize!r}")
    per_layer = [
        unit_norms((*parts.projections, parts.output), _current(parts))
        for parts in head_parts(model)
    ]
    scores = _scatter(model, per_layer)
    return _normalise_per_layer(scores) if normalize else scores
