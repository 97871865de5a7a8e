"""Feed-forward (width) pruning: physically remove the same number of intermediate neurons per layer.

A feed-forward block computes ``W_out act(W_in x + b_in) + b_out`` (gated families: ``W_out
(act(W_gate x) * W_up x)``). Removing intermediate neuron ``j`` removes row ``j`` of every input
projection (with its bias entry) and column ``j`` of the output projection: new, smaller
``nn.Linear`` / ``Conv1D`` modules of the same dtype and device (the slicing of
:func:`loyalkit.compression.attention_layout.cut`, with units one neuron wide), so the model does
less work. Every layer loses the same number of neurons, so the config's intermediate size
(``intermediate_size``; DistilBERT's ``hidden_dim``, GPT-2's ``n_inner``) is updated and still
describes the model: a plain ``from_pretrained`` of the saved folder rebuilds it.

Families: BERT-layout encoders (BERT, RoBERTa, XLM-RoBERTa, ELECTRA, DeBERTa-v2/v3), DistilBERT,
ModernBERT (its fused ``Wi`` holds ``[input | gate]``), GPT-2, Llama and Qwen2 (``gate_proj``,
``up_proj``, ``down_proj``); ALBERT (shared layers) and unknown layouts are refused by name.
Scores come from :mod:`loyalkit.compression.ffn_importance`; the least important neurons go.

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from loyalkit.compression import prune_ffn
    >>> model = BertForSequenceClassification(BertConfig(
    ...     vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=4,
    ...     intermediate_size=32))
    >>> removed = prune_ffn(model, fraction=0.5)          # magnitude importance by default
    >>> [len(neurons) for neurons in removed], model.config.intermediate_size
    ([16, 16], 16)
    >>> model.bert.encoder.layer[0].intermediate.dense.weight.shape
    torch.Size([16, 16])
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

from loyalkit.compression.architectures import is_conv1d, per_layer_stack
from loyalkit.compression.attention_layout import Projection, cut

__all__ = [
    "FFN_PRUNING_FAMILIES",
    "FfnParts",
    "ffn_output_weights",
    "ffn_parts",
    "ffn_removal_count",
    "prune_ffn",
    "remove_ffn_neurons",
    "select_ffn_neurons",
    "zero_ffn_neurons",
    "zeroed_ffn_neurons",
]

FFN_PRUNING_FAMILIES = (
    "bert",
    "roberta",
    "xlm-roberta",
    "electra",
    "deberta-v2",
    "distilbert",
    "modernbert",
    "gpt2",
    "llama",
    "qwen2",
)


@dataclass(frozen=True)
class FfnParts:
    """One layer's feed-forward block: the projections into and out of its intermediate neurons."""

    inputs: tuple[Projection, ...]  # rows (Conv1D: columns) run over neurons
    output: Projection  # input columns run over neurons
    config_key: str  # the config attribute holding the intermediate size

    @property
    def neurons(self) -> int:
        """The intermediate neurons this layer has now."""
        return int(self.output.module.weight.shape[self.output.axis])


def _linear(owner: Any, name: str) -> bool:
    module = getattr(owner, name, None)
    return isinstance(module, nn.Linear) or (module is not None and is_conv1d(module))


def _layout(layer: nn.Module) -> FfnParts | None:
    intermediate, output = getattr(layer, "intermediate", None), getattr(layer, "output", None)
    if _linear(intermediate, "dense") and _linear(output, "dense"):  # BERT layout, DeBERTa
        return FfnParts(
            (Projection(intermediate, "dense", 1),),
            Projection(output, "dense", 1, output_side=False),
            "intermediate_size",
        )
    ffn = getattr(layer, "ffn", None)
    if _linear(ffn, "lin1") and _linear(ffn, "lin2"):  # DistilBERT
        return FfnParts(
            (Projection(ffn, "lin1", 1),),
            Projection(ffn, "lin2", 1, output_side=False),
            "hidden_dim",
        )
    mlp = getattr(layer, "mlp", None)
    if _linear(mlp, "Wi") and _linear(mlp, "Wo"):  # ModernBERT: Wi = [input | gate]
        return FfnParts(
            (Projection(mlp, "Wi", 1, sections=2),),
            Projection(mlp, "Wo", 1, output_side=False),
            "intermediate_size",
        )
    if _linear(mlp, "c_fc") and _linear(mlp, "c_proj"):  # GPT-2 (Conv1D)
        return FfnParts(
            (Projection(mlp, "c_fc", 1),),
            Projection(mlp, "c_proj", 1, output_side=False),
            "n_inner",
        )
    if all(_linear(mlp, n) for n in ("gate_proj", "up_proj", "down_proj")):  # Llama, Qwen2
        return FfnParts(
            (Projection(mlp, "gate_proj", 1), Projection(mlp, "up_proj", 1)),
            Projection(mlp, "down_proj", 1, output_side=False),
            "intermediate_size",
        )
    return None


def ffn_parts(model: nn.Module) -> list[FfnParts]:
    """The feed-forward block of every layer; a ValueError names an unsupported model class."""
    stack = per_layer_stack(model, "feed-forward pruning")
    parts = []
    for layer in stack.layers:
        found = _layout(layer)
        if found is None:
            raise ValueError(
                f"feed-forward pruning does not know the feed-forward layout of "
                f"{type(model).__name__} ({stack.family}); supported families: "
                f"{', '.join(FFN_PRUNING_FAMILIES)}"
            )
        parts.append(found)
    return parts


def ffn_output_weights(model: nn.Module) -> list[torch.Tensor]:
    """The output projection weight of every layer (what :func:`zero_ffn_neurons` changes)."""
    return [parts.output.module.weight for parts in ffn_parts(model)]


def ffn_removal_count(
    neurons: int, *, fraction: float | None = None, count: int | None = None
) -> int:
    """How many of a layer's ``neurons`` to remove for ``fraction`` (of them) or ``count``.

    Exactly one of the two; the result is at least 1 (removing nothing is refused, not skipped)
    and leaves at least one neuron.

    >>> ffn_removal_count(1536, fraction=0.5), ffn_removal_count(1536, count=100)
    (768, 100)
    """
    if (fraction is None) == (count is None):
        raise ValueError(
            f"fraction, count: pass exactly one of them, got fraction={fraction!r}, count={count!r}"
        )
    if fraction is not None:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
            raise TypeError(f"fraction: expected a number in (0, 1), got {fraction!r}")
        if math.isnan(fraction) or not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction: expected a number in (0, 1), got {fraction!r}")
        removed = math.floor(fraction * neurons + 1e-9)
        if removed < 1:
            raise ValueError(
                f"fraction: {fraction} of {neurons} neurons per layer removes none; "
                f"pass a fraction >= {1 / neurons:.4g} or count=1"
            )
        return removed
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"count: expected an int >= 1, got {count!r}")
    if not 1 <= count < neurons:
        raise ValueError(
            f"count: expected an int in [1, {neurons - 1}] (neurons removed per layer, leaving at "
            f"least one of the {neurons}), got {count}"
        )
    return count


def select_ffn_neurons(
    importance: torch.Tensor, *, fraction: float | None = None, count: int | None = None
) -> list[list[int]]:
    """Per layer, the positions of the ``count`` (or ``fraction`` of the) least important neurons.

    ``importance`` is ``(layers, neurons)``; ties go to the lower index. The same number is
    chosen in every layer.

    >>> import torch
    >>> select_ffn_neurons(torch.tensor([[0.3, 0.1, 0.2, 0.9], [1.0, 2.0, 0.0, 0.5]]), count=2)
    [[1, 2], [2, 3]]
    """
    if not isinstance(importance, torch.Tensor) or importance.dim() != 2:
        raise TypeError("importance: expected a 2-D tensor (layers, neurons)")
    if torch.isnan(importance).any():
        raise ValueError("importance: expected finite scores, got NaN")
    removed = ffn_removal_count(int(importance.shape[1]), fraction=fraction, count=count)
    order = torch.argsort(importance.detach().double().cpu(), dim=1, stable=True)
    return [sorted(row[:removed].tolist()) for row in order]


def _check_neurons(parts: list[FfnParts], neurons: Sequence[Iterable[int]]) -> list[list[int]]:
    if isinstance(neurons, (str, bytes)) or not isinstance(neurons, Sequence):
        raise TypeError("neurons: expected one list of neuron positions per layer")
    if len(neurons) != len(parts):
        raise ValueError(
            f"neurons: expected one list per layer ({len(parts)} layers), got {len(neurons)}"
        )
    checked = []
    for layer, (block, chosen) in enumerate(zip(parts, neurons, strict=True)):
        values = list(chosen)
        bad: list[object] = [
            n
            for n in values
            if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n < block.neurons
        ]
        if bad or len(set(values)) != len(values):
            raise ValueError(
                f"neurons: layer {layer} must list distinct ints in [0, {block.neurons}), got "
                f"{sorted(values, key=str)}"
            )
        checked.append(sorted(values))
    sizes = {len(values) for values in checked}
    if len(sizes) != 1:
        raise ValueError(
            f"neurons: every layer must lose the same number of neurons (so that the config's "
            f"intermediate size describes the model), got {[len(v) for v in checked]}"
        )
    return checked


def remove_ffn_neurons(model: nn.Module, neurons: Sequence[Iterable[int]]) -> nn.Module:
    """Physically remove ``neurons`` (per layer, positions in the current intermediate layer).

    Every layer must lose the same number, at least one, and keep at least one. The config's
    intermediate size is updated. The new modules hold new parameters: an optimizer built
    before this call does not train them (see :func:`zero_ffn_neurons` for pruning during
    training). Returns ``model``.
    """
    parts = ffn_parts(model)
    checked = _check_neurons(parts, neurons)
    removed = len(checked[0])
    current = {block.neurons for block in parts}
    if len(current) != 1:
        raise ValueError(f"model: its layers have different intermediate sizes {sorted(current)}")
    size = current.pop()
    if removed == 0:
        raise ValueError("neurons: no neuron named; removing nothing is not pruning")
    if removed >= size:
        raise ValueError(f"neurons: removing {removed} of {size} neurons leaves a layer with none")
    for block, chosen in zip(parts, checked, strict=True):
        gone = set(chosen)
        keep = [n for n in range(size) if n not in gone]
        for projection in (*block.inputs, block.output):
            cut(projection, keep, size)
    setattr(model.config, parts[0].config_key, size - removed)
    return model


def prune_ffn(
    model: nn.Module,
    *,
    fraction: float | None = None,
    count: int | None = None,
    importance: torch.Tensor | Literal["magnitude"] = "magnitude",
) -> list[list[int]]:
    """Remove ``count`` (or ``fraction`` of the) least important neurons of every layer.

    ``importance``: ``"magnitude"`` (:func:`~loyalkit.compression.magnitude_ffn_importance`) or a
    ``(layers, neurons)`` tensor such as :func:`~loyalkit.compression.gradient_ffn_importance`
    returns. Returns the removed positions per layer (in the layer as it was before the call).
    """
    if isinstance(importance, str):
        if importance != "magnitude":
            raise ValueError(
                f"importance: expected 'magnitude' or a (layers, neurons) tensor (for gradient "
                f"importance pass gradient_ffn_importance(model, batches)), got {importance!r}"
            )
        from loyalkit.compression.ffn_importance import magnitude_ffn_importance

        importance = magnitude_ffn_importance(model)
    parts = ffn_parts(model)
    expected = (len(parts), parts[0].neurons)
    if not isinstance(importance, torch.Tensor) or tuple(importance.shape) != expected:
        shape = tuple(importance.shape) if isinstance(importance, torch.Tensor) else importance
        raise ValueError(f"importance: expected a tensor of shape {expected}, got {shape!r}")
    chosen = select_ffn_neurons(importance, fraction=fraction, count=count)
    remove_ffn_neurons(model, chosen)
    return chosen


def _columns(parts: FfnParts, neuron: int) -> torch.Tensor:
    weight = parts.output.module.weight
    return weight[:, neuron] if parts.output.axis == 1 else weight[neuron, :]


@torch.no_grad()
def zero_ffn_neurons(model: nn.Module, neurons: Sequence[Iterable[int]]) -> None:
    """Silence ``neurons`` without changing any shape: zero their output-projection columns.

    Neuron ``j`` contributes ``W_out[:, j] * a_j`` to the layer's output; with that column at zero
    the model computes exactly what the model with the neuron removed computes, and keeps the
    same parameter objects (safe with an existing optimizer and DDP). Call it again after each
    optimizer step, which moves the columns away from zero. Empty lists are allowed here.
    """
    parts = ffn_parts(model)
    if len(neurons) != len(parts):
        raise ValueError(f"neurons: expected one list per layer ({len(parts)}), got {len(neurons)}")
    for block, chosen in zip(parts, neurons, strict=True):
        for neuron in chosen:
            if not 0 <= neuron < block.neurons:
                raise ValueError(f"neurons: {neuron} is not in [0, {block.neurons})")
            _columns(block, neuron).zero_()


def zeroed_ffn_neurons(model: nn.Module) -> list[list[int]]:
    """Per layer, the neurons whose output-projection columns are all exactly zero."""
    found = []
    for block in ffn_parts(model):
        weight = block.output.module.weight
        columns = weight if block.output.axis == 1 else weight.t()
        found.append(torch.nonzero(~columns.detach().bool().any(dim=0)).flatten().tolist())
    return found
