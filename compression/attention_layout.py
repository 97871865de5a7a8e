"""How each family lays out its attention heads in weight matrices, and how to cut heads out.

A *unit* is what head pruning removes at once. For multi-head attention it is one head. For
grouped-query attention (Llama, Qwen2 with ``num_key_value_heads < num_attention_heads``) it is a
whole key/value group: one key head, one value head and the ``num_attention_heads /
num_key_value_heads`` query heads that read them. Removing single query heads inside a group
would leave groups of different sizes, which transformers' attention (``repeat_kv`` repeats every
key/value head the same ``num_key_value_groups`` times) cannot run; removing the same number of
query heads from every group is possible but couples unrelated heads. Whole groups keep the layer
a standard grouped-query layer with fewer groups, and save the key/value cache as well.

Each layer's attention is described by :class:`HeadParts`: the projections whose rows (or, for the
output projection, input columns) run over units, possibly fused (``[q | k | v]`` in ModernBERT's
``Wqkv`` and GPT-2's ``c_attn``), and the attributes its forward reads. Supported: BERT, RoBERTa,
XLM-RoBERTa, ELECTRA (and other BERT-layout encoders), DistilBERT, DeBERTa-v2/v3, ModernBERT,
GPT-2, Llama, Qwen2 (and Llama-layout decoders: Mistral, ...). ALBERT shares one attention module
across all layers and is refused.

Example:
    >>> from transformers import LlamaConfig, LlamaForSequenceClassification
    >>> model = LlamaForSequenceClassification(LlamaConfig(
    ...     vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...     num_attention_heads=4, num_key_value_heads=2, pad_token_id=0))
    >>> num_units(model)  # two key/value groups of two query heads each
    2
    >>> parts = head_parts(model)[0]
    >>> [p.name for p in parts.projections], parts.output.name, parts.unit_width
    (['q_proj', 'k_proj', 'v_proj'], 'o_proj', 16)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from loyalkit.compression.architectures import PER_LAYER_FAMILIES, is_conv1d, per_layer_stack

__all__ = [
    "HEAD_PRUNING_FAMILIES",
    "ORIGINAL_UNITS_KEY",
    "HeadParts",
    "Projection",
    "head_parts",
    "num_units",
]

# Every family with one attention module per layer (the tested ones: the matrix test covers each).
HEAD_PRUNING_FAMILIES = PER_LAYER_FAMILIES


@dataclass(frozen=True)
class Projection:
    """``owner.<name>``: a Linear/Conv1D whose weight runs over units along its input or output side.

    ``sections`` equal slices each laid out unit by unit (3 for a fused ``[q | k | v]``), each unit
    ``width`` entries wide; ``output_side`` is True for the q/k/v projections (units are outputs,
    the bias is cut too) and False for the attention output projection (units are inputs).
    """

    owner: nn.Module
    name: str
    width: int
    sections: int = 1
    output_side: bool = True

    @property
    def module(self) -> Any:
        return getattr(self.owner, self.name)

    @property
    def axis(self) -> int:
        """The weight axis that runs over units (Conv1D stores its weight transposed)."""
        conv = is_conv1d(self.module)
        return (1 if conv else 0) if self.output_side else (0 if conv else 1)

    def indices(self, keep: list[int], current: int) -> torch.Tensor:
        """Weight indices along :attr:`axis` of the units at positions ``keep`` (of ``current``)."""
        span = current * self.width
        return torch.tensor(
            [
                section * span + position * self.width + offset
                for section in range(self.sections)
                for position in keep
                for offset in range(self.width)
            ],
            dtype=torch.long,
        )


@dataclass(frozen=True)
class HeadParts:
    """One layer's attention: where its units live and how to tell its forward the new count."""

    module: nn.Module  # where the removed units are recorded (``pruned_heads``)
    projections: tuple[Projection, ...]
    output: Projection  # the attention output projection (its input columns run over units)
    unit_width: int  # columns of the output projection per unit
    set_count: Callable[[int], None]  # tells the module its new number of units
    # transformers 4.x prunes these from config.pruned_heads itself (BERT layout, DistilBERT,
    # GPT-2); for the others a config.pruned_heads would make 4.x's from_pretrained fail
    transformers_prunes: bool = False
    # the config's head counts (with an explicit head_dim) can describe fewer heads (Llama layout)
    config_describes_counts: bool = False


def _set(module: nn.Module, **values: Callable[[int], int]) -> Callable[[int], None]:
    def apply(units: int) -> None:
        for name, value in values.items():
            setattr(module, name, value(units))

    return apply


ORIGINAL_UNITS_KEY = "loyalkit_original_heads"
"""Set on a config that describes a uniformly head-pruned Llama-layout model (see head_pruning)."""


def num_units(model: nn.Module) -> int:
    """Units per layer in the original model: heads, or key/value groups under grouped-query attention."""
    config: Any = getattr(model, "config", None)
    original = getattr(config, ORIGINAL_UNITS_KEY, None)
    if isinstance(original, int):
        return original
    heads = int(config.num_attention_heads)
    kv = getattr(config, "num_key_value_heads", None)
    return int(kv) if isinstance(kv, int) and 0 < kv < heads else heads


def _bert_parts(layer: Any, config: Any) -> HeadParts:
    attention, self_attention = layer.attention, layer.attention.self
    size = int(self_attention.attention_head_size)
    names = [n for n in ("query", "key", "value") if hasattr(self_attention, n)]
    if not names:  # DeBERTa-v2/v3
        names = [
            n
            for n in ("query_proj", "key_proj", "value_proj", "pos_key_proj", "pos_query_proj")
            if isinstance(getattr(self_attention, n, None), nn.Linear)
        ]
    return HeadParts(
        attention,
        tuple(Projection(self_attention, n, size) for n in names),
        Projection(attention.output, "dense", size, output_side=False),
        size,
        _set(
            self_attention,
            num_attention_heads=lambda u: u,
            all_head_size=lambda u: u * size,
        ),
        transformers_prunes=names[0] == "query",
    )


def _distilbert_parts(layer: Any, config: Any) -> HeadParts:
    attention = layer.attention
    size = int(attention.attention_head_size)
    return HeadParts(
        attention,
        tuple(Projection(attention, n, size) for n in ("q_lin", "k_lin", "v_lin")),
        Projection(attention, "out_lin", size, output_side=False),
        size,
        # transformers 4.x derives the head size from dim / n_heads in forward
        _set(attention, n_heads=lambda u: u, dim=lambda u: u * size),
        transformers_prunes=True,
    )


def _modernbert_parts(layer: Any, config: Any) -> HeadParts:
    attention = layer.attn
    size = int(attention.head_dim)
    return HeadParts(
        attention,
        (Projection(attention, "Wqkv", size, sections=3),),
        Projection(attention, "Wo", size, output_side=False),
        size,
        # transformers 4.x reshapes by num_heads and all_head_size in forward
        _set(attention, num_heads=lambda u: u, all_head_size=lambda u: u * size),
    )


def _gpt2_parts(layer: Any, config: Any) -> HeadParts:
    attention = layer.attn
    size = int(attention.head_dim)
    if getattr(attention, "is_cross_attention", False):
        raise ValueError("GPT-2 cross-attention layers are not supported by head pruning")
    return HeadParts(
        attention,
        (Projection(attention, "c_attn", size, sections=3),),
        Projection(attention, "c_proj", size, output_side=False),
        size,
        _set(attention, num_heads=lambda u: u, split_size=lambda u: u * size),
        transformers_prunes=True,
    )


def _llama_parts(layer: Any, config: Any) -> HeadParts:
    attention = layer.self_attn
    size = int(attention.head_dim)
    per_group = int(getattr(attention, "num_key_value_groups", 1))
    return HeadParts(
        attention,
        (
            Projection(attention, "q_proj", size * per_group),
            Projection(attention, "k_proj", size),
            Projection(attention, "v_proj", size),
        ),
        Projection(attention, "o_proj", size * per_group, output_side=False),
        size * per_group,
        _set(attention),  # its forward infers the head counts from the tensor shapes
        # Llama, Qwen2, Mistral read getattr(config, "head_dim", hidden_size // heads)
        config_describes_counts=True,
    )


def _layout(layer: nn.Module) -> Callable[[nn.Module, Any], HeadParts] | None:
    attention = getattr(layer, "attention", None)
    self_attention = getattr(attention, "self", None)
    has_output = isinstance(getattr(getattr(attention, "output", None), "dense", None), nn.Linear)
    has_query = isinstance(getattr(self_attention, "query", None), nn.Linear) or isinstance(
        getattr(self_attention, "query_proj", None), nn.Linear
    )
    if self_attention is not None and has_output and has_query:
        return _bert_parts
    if attention is not None and isinstance(getattr(attention, "q_lin", None), nn.Linear):
        return _distilbert_parts
    attn = getattr(layer, "attn", None)
    if isinstance(getattr(attn, "Wqkv", None), nn.Linear):
        return _modernbert_parts
    if attn is not None and is_conv1d(getattr(attn, "c_attn", nn.Identity())):
        return _gpt2_parts
    if isinstance(getattr(getattr(layer, "self_attn", None), "q_proj", None), nn.Linear):
        return _llama_parts
    return None


def head_parts(model: nn.Module) -> list[HeadParts]:
    """The attention of every layer of ``model``; a ValueError names unsupported architectures."""
    stack = per_layer_stack(model, "head pruning")
    config = getattr(model, "config", None)
    parts = []
    for layer in stack.layers:
        layout = _layout(layer)
        if layout is None:
            raise ValueError(
                f"head pruning does not know the attention layout of {type(model).__name__} "
                f"({stack.family}); supported families: {', '.join(HEAD_PRUNING_FAMILIES)}"
            )
        parts.append(layout(layer, config))
    return parts


def cut(projection: Projection, keep: list[int], current: int) -> None:
    """Replace ``projection``'s module by a smaller one of the same class, dtype and device."""
    from transformers.pytorch_utils import Conv1D

    module: Any = projection.module
    weight = module.weight.detach()
    index = projection.indices(keep, current).to(weight.device)
    axis = projection.axis
    new_weight = weight.index_select(axis, index)
    bias = getattr(module, "bias", None)
    new_bias = None
    if bias is not None:
        new_bias = bias.detach()[index.to(bias.device)] if projection.output_side else bias.detach()
    new: Any
    if is_conv1d(module):
        new = Conv1D(new_weight.shape[1], new_weight.shape[0])
    else:
        new = nn.Linear(new_weight.shape[1], new_weight.shape[0], bias=bias is not None)
    new = new.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(new_weight)
        if new_bias is not None:
            new.bias.copy_(new_bias)
    new.weight.requires_grad_(module.weight.requires_grad)
    if bias is not None:
        new.bias.requires_grad_(bias.requires_grad)
    setattr(projection.owner, projection.name, new)
