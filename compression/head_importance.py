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
absolute value is taken per example, as the paper defines it.

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

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from loyalkit.compression.attention_layout import head_parts, num_units
from loyalkit.compression.head_pruning import remaining_heads

__all__ = ["gradient_head_importance", "head_gates", "magnitude_head_importance"]


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
def head_gates(model: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward multiplies every head's context by a fresh gate of ones.

    Yields a list that each forward pass appends to: one ``(batch, heads)`` gate per layer,
    in layer order, requiring grad. Differentiate a loss with respect to them.
    """
    gates: list[torch.Tensor] = []
    handles = []

    def make_hook(head_size: int) -> Any:
        def gate_context(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
            context = args[0]
            batch, heads = context.shape[0], context.shape[-1] // head_size
            gate = torch.ones(batch, heads, dtype=context.dtype, device=context.device)
            gate.requires_grad_(True)
            gates.append(gate)
            shape = (*context.shape[:-1], heads, head_size)
            view = (batch,) + (1,) * (context.dim() - 2) + (heads, 1)
            gated = (context.view(shape) * gate.view(view)).view(context.shape)
            return (gated, *args[1:])

        return gate_context

    try:
        for parts in head_parts(model):
            hook = make_hook(parts.unit_width)
            handles.append(parts.output.module.register_forward_pre_hook(hook))
        yield gates
    finally:
        for handle in handles:
            handle.remove()


def _to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


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
    blocks = head_parts(model)
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
            with torch.enable_grad(), head_gates(model) as gates:
                loss = model(**_to_device(batch, device)).loss
                if loss is None or len(gates) != len(blocks):
                    raise ValueError(
                        "batches: the model returned no loss for a batch with 'labels'"
                    )
                size = gates[0].shape[0]
                # mean loss * batch size = sum of per-example losses: d/d gate[b] is example b's own
                grads = torch.autograd.grad(loss * size, gates)
            per_layer = [g.abs().sum(dim=0).detach() for g in grads]
            totals = (
                per_layer
                if totals is None
                else [t + p for t, p in zip(totals, per_layer, strict=True)]
            )
            examples += size
    finally:
        model.train(was_training)
    if totals is None:
        raise ValueError("batches: expected at least one batch, got none")
    scores = _scatter(model, [t / examples for t in totals])
    return _normalise_per_layer(scores) if normalize else scores


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
    per_layer = []
    for parts in head_parts(model):
        units = _current(parts)
        squares = torch.zeros(units, dtype=torch.float64)
        for projection in (*parts.projections, parts.output):
            weight = projection.module.weight.double().movedim(projection.axis, 0)
            # (sections, units, width, other axis): every section's slice of each unit
            blocks = weight.reshape(projection.sections, units, projection.width, -1)
            squares += blocks.pow(2).sum(dim=(0, 2, 3)).cpu()
        per_layer.append(squares.sqrt())
    scores = _scatter(model, per_layer)
    return _normalise_per_layer(scores) if normalize else scores
