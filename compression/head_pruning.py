"""Structured attention-head pruning: physically remove whole heads from a transformer classifier.

A removed head loses its rows in the query, key and value projections (fused or not) and its
columns in the attention output projection (new, smaller ``nn.Linear`` / ``Conv1D`` modules of the
same dtype and device), for every family :mod:`loyalkit.compression.attention_layout` knows
(BERT-layout encoders, DistilBERT, DeBERTa-v2/v3, ModernBERT, GPT-2, Llama, Qwen2; under
grouped-query attention a "head" here is a whole key/value group, see that module for why),
so the pruned model is smaller and faster. Heads are always named by their *original* index, as in
``config.pruned_heads``, which this module keeps up to date.

Saving and loading: ``model.save_pretrained(path)`` writes the smaller tensors and
``config.pruned_heads``. transformers 4.x prunes a fresh model from ``config.pruned_heads`` inside
``from_pretrained``, so there the plain ``BertForSequenceClassification.from_pretrained(path)``
works. transformers 5 removed that step (and ``prune_heads``); :func:`load_head_pruned` builds the
pruned structure before the weights load, on both versions.

Example:
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from loyalkit.compression import prune_heads, remaining_heads
    >>> config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
    ...                     num_attention_heads=4, intermediate_size=32)
    >>> model = BertForSequenceClassification(config)
    >>> _ = prune_heads(model, {0: [1, 3], 1: [0]})
    >>> remaining_heads(model)
    [[0, 2], [1, 2, 3]]
    >>> model.bert.encoder.layer[0].attention.self.query.weight.shape
    torch.Size([8, 16])
    >>> model.config.pruned_heads
    {0: [1, 3], 1: [0]}
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from transformers import AutoConfig, PreTrainedModel

from loyalkit.compression.attention_layout import (
    ORIGINAL_UNITS_KEY,
    HeadParts,
    cut,
    head_parts,
    num_units,
)

__all__ = [
    "HeadMap",
    "attention_blocks",
    "head_weights",
    "load_head_pruned",
    "prune_heads",
    "OWN_CONFIG_KEY",
    "pruned_heads_from_config",
    "remaining_heads",
    "select_heads_to_prune",
    "zero_head_outputs",
    "zeroed_heads",
]

HeadMap = dict[int, list[int]]
"""Layer index -> original indices of heads in that layer (the ``config.pruned_heads`` format)."""


def attention_blocks(model: nn.Module) -> list[nn.Module]:
    """The attention module of every layer (where removed heads are recorded), in layer order.

    Any family :mod:`loyalkit.compression.attention_layout` knows: BERT-layout encoders,
    DistilBERT, DeBERTa-v2/v3, ModernBERT, GPT-2, Llama, Qwen2; ALBERT (shared layers) is refused.
    """
    return [parts.module for parts in head_parts(model)]


def head_weights(model: nn.Module) -> list[torch.Tensor]:
    """Every weight head pruning changes: the q/k/v (fused or not) and output projections."""
    return [
        projection.module.weight
        for parts in head_parts(model)
        for projection in (*parts.projections, parts.output)
    ]


def _num_original_heads(model: nn.Module) -> int:
    return num_units(model)


def _pruned_in_block(block: Any) -> set[int]:
    # transformers 4.x keeps this set on BertAttention; 5.x dropped it, so we keep it the same way.
    return set(getattr(block, "pruned_heads", set()))


def _current_units(parts: HeadParts) -> int:
    module = parts.output.module
    columns = int(module.weight.shape[parts.output.axis])
    return columns // parts.unit_width


def remaining_heads(model: nn.Module) -> list[list[int]]:
    """Original indices of the heads still present, per layer.

    Under grouped-query attention (Llama, Qwen2) the indices are key/value groups (see
    :mod:`loyalkit.compression.attention_layout`).
    """
    num_heads = _num_original_heads(model)
    result = []
    for index, parts in enumerate(head_parts(model)):
        kept = [h for h in range(num_heads) if h not in _pruned_in_block(parts.module)]
        if _current_units(parts) != len(kept):
            raise RuntimeError(
                f"layer {index}: the attention output projection has room for "
                f"{_current_units(parts)} heads but {len(kept)} are recorded; was it pruned by "
                "other means?"
            )
        result.append(kept)
    return result


OWN_CONFIG_KEY = "loyalkit_pruned_heads"
"""Where the removed heads are recorded for families transformers 4.x cannot prune itself
(DeBERTa, ModernBERT, Llama, Qwen2): a ``config.pruned_heads`` would make its ``from_pretrained``
fail. BERT-layout encoders, DistilBERT and GPT-2 use ``config.pruned_heads``."""


def _config_key(model: nn.Module) -> str:
    own = not all(parts.transformers_prunes for parts in head_parts(model))
    return OWN_CONFIG_KEY if own else "pruned_heads"


def pruned_heads_from_config(config: Any) -> HeadMap:
    """The removed heads a config records (``pruned_heads`` or ``loyalkit_pruned_heads``).

    Integer keys (JSON turns them into strings), sorted, no empties.
    """
    raw = getattr(config, "pruned_heads", None) or getattr(config, OWN_CONFIG_KEY, None) or {}
    heads = {int(layer): sorted({int(h) for h in hs}) for layer, hs in dict(raw).items()}
    return {layer: hs for layer, hs in sorted(heads.items()) if hs}


def _check_head_map(model: nn.Module, heads: Mapping[int, Iterable[int]], name: str) -> HeadMap:
    if not isinstance(heads, Mapping):
        raise TypeError(
            f"{name}: expected a mapping layer -> head indices, got {type(heads).__name__}"
        )
    num_layers = len(head_parts(model))
    num_heads = _num_original_heads(model)
    checked: HeadMap = {}
    for layer, layer_heads in heads.items():
        if not isinstance(layer, int) or not 0 <= layer < num_layers:
            raise ValueError(f"{name}: layer {layer!r} is not an index in [0, {num_layers})")
        values = sorted(set(layer_heads))
        bad = [h for h in values if not isinstance(h, int) or not 0 <= h < num_heads]
        if bad:
            raise ValueError(f"{name}: layer {layer} names heads {bad} outside [0, {num_heads})")
        if values:
            checked[layer] = values
    return checked


def _remove_heads_from_block(parts: HeadParts, heads: set[int], num_heads: int) -> None:
    block = parts.module
    already = _pruned_in_block(block)
    current = [h for h in range(num_heads) if h not in already]
    new = heads - already
    if not new:
        return
    if len(new) == len(current):
        raise ValueError(
            f"heads: removing heads {sorted(new)} would leave a layer with no head; "
            "transformers' attention cannot run with zero heads"
        )
    keep = [position for position, h in enumerate(current) if h not in new]
    for projection in (*parts.projections, parts.output):
        cut(projection, keep, len(current))
    parts.set_count(len(keep))
    block.pruned_heads = already | new


def prune_heads(model: PreTrainedModel, heads: Mapping[int, Iterable[int]]) -> PreTrainedModel:
    """Physically remove ``heads`` (layer -> original head indices) in place; returns ``model``.

    Heads already removed are ignored. ``model.config.pruned_heads`` is updated so that
    :func:`load_head_pruned` (and ``from_pretrained`` on transformers 4.x for BERT) rebuild the same
    shapes. Removing every head of a layer raises ``ValueError``. Under grouped-query attention the
    indices name key/value groups, each removed with its query heads. The new modules hold new
    parameters: an optimizer built before this call does not train them (see
    :func:`zero_head_outputs` for pruning during training).
    """
    checked = _check_head_map(model, heads, "heads")
    blocks = head_parts(model)
    num_heads = _num_original_heads(model)
    for layer, layer_heads in checked.items():  # validate every layer before changing any
        left = set(range(num_heads)) - _pruned_in_block(blocks[layer].module) - set(layer_heads)
        if not left:
            raise ValueError(f"heads: removing heads {layer_heads} of layer {layer} leaves no head")
    for layer, layer_heads in checked.items():
        _remove_heads_from_block(blocks[layer], set(layer_heads), num_heads)
    recorded = pruned_heads_from_config(model.config)
    for layer, layer_heads in checked.items():
        recorded[layer] = sorted(set(recorded.get(layer, [])) | set(layer_heads))
    setattr(model.config, _config_key(model), dict(sorted(recorded.items())))
    _describe_counts(model)
    return model


def _describe_counts(model: nn.Module) -> None:
    """Let the config describe a Llama-layout model whose layers all kept the same number of groups.

    Its ``num_key_value_heads`` / ``num_attention_heads`` then count what is left (``head_dim`` is
    explicit), so a plain ``from_pretrained`` builds the smaller model; ``loyalkit_original_heads``
    keeps the original count for the original head indices. Uneven layers keep the original counts
    (reload with :func:`load_head_pruned`).
    """
    parts = head_parts(model)
    if not all(p.config_describes_counts for p in parts):
        return
    config: Any = model.config
    original = num_units(model)
    per_group = int(config.num_attention_heads) // int(config.num_key_value_heads)
    removed = pruned_heads_from_config(config)
    kept = {original - len(removed.get(layer, [])) for layer in range(len(parts))}
    units = kept.pop() if len(kept) == 1 else original
    setattr(config, ORIGINAL_UNITS_KEY, original)
    if not isinstance(getattr(config, "head_dim", None), int):  # else derived from the counts
        config.head_dim = int(parts[0].module.head_dim)
    config.num_key_value_heads = units
    config.num_attention_heads = units * per_group


def _counts_described(config: Any) -> bool:
    original = getattr(config, ORIGINAL_UNITS_KEY, None)
    return isinstance(original, int) and int(config.num_key_value_heads) != original


def _output_slice(parts: HeadParts, head: int, num_heads: int) -> tuple[int, slice]:
    """The weight axis of the output projection and the entries of ``head`` along it."""
    kept = [h for h in range(num_heads) if h not in _pruned_in_block(parts.module)]
    if head not in kept:
        raise ValueError(f"heads: head {head} was already removed")
    start = kept.index(head) * parts.unit_width
    return parts.output.axis, slice(start, start + parts.unit_width)


def _head_block(weight: torch.Tensor, axis: int, entries: slice) -> torch.Tensor:
    return weight[:, entries] if axis == 1 else weight[entries, :]


@torch.no_grad()
def zero_head_outputs(model: PreTrainedModel, heads: Mapping[int, Iterable[int]]) -> None:
    """Silence ``heads`` without changing any shape: zero their columns of the output projection.

    A head's contribution to the layer is ``W_o[:, head columns] @ context_head``; with those
    columns at zero the model computes exactly what the model with the heads removed computes,
    and keeps the same parameter objects (safe with an existing optimizer and DDP). Call it
    again after each optimizer step, which moves the columns away from zero.
    """
    checked = _check_head_map(model, heads, "heads")
    blocks = head_parts(model)
    num_heads = _num_original_heads(model)
    for layer, layer_heads in checked.items():
        for head in layer_heads:
            axis, entries = _output_slice(blocks[layer], head, num_heads)
            _head_block(blocks[layer].output.module.weight, axis, entries).zero_()


def zeroed_heads(model: PreTrainedModel) -> HeadMap:
    """Heads whose output-projection columns are all exactly zero (they contribute nothing)."""
    num_heads = _num_original_heads(model)
    found: HeadMap = {}
    for layer, (parts, kept) in enumerate(
        zip(head_parts(model), remaining_heads(model), strict=True)
    ):
        weight = parts.output.module.weight
        zero = [
            h for h in kept if not _head_block(weight, *_output_slice(parts, h, num_heads)).any()
        ]
        if zero:
            found[layer] = zero
    return found


def _check_share(share: float) -> float:
    if isinstance(share, bool) or not isinstance(share, (int, float)) or math.isnan(share):
        raise TypeError(f"share: expected a number in [0, 1), got {share!r}")
    if not 0.0 <= share < 1.0:
        raise ValueError(f"share: expected a number in [0, 1), got {share}")
    return float(share)


def select_heads_to_prune(
    importance: torch.Tensor,
    share: float,
    *,
    scope: Literal["global", "layer"] = "global",
    min_heads_per_layer: int = 1,
) -> HeadMap:
    """The least important heads to remove so that ``share`` of all original heads are gone.

    ``importance`` is ``(layers, original heads)``, ``NaN`` for heads already removed (as the
    importance functions return it); those count towards ``share``. ``scope="global"`` ranks all
    heads together (Michel et al. 2019), ``"layer"`` removes ``share`` of each layer's heads.
    No layer keeps fewer than ``min_heads_per_layer`` heads (at least 1). Ties go to the lower
    (layer, head) index. Returns only the heads to remove now.

    Example:
        >>> import torch
        >>> scores = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, float("nan"), 0.7]])
        >>> select_heads_to_prune(scores, 0.5)
        {0: [1, 3], 1: [0]}
        >>> select_heads_to_prune(scores, 0.5, scope="layer")
        {0: [1, 3], 1: [0]}
    """
    share = _check_share(share)
    if not isinstance(importance, torch.Tensor) or importance.dim() != 2:
        raise TypeError("importance: expected a 2-D tensor (layers, heads)")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope: expected 'global' or 'layer', got {scope!r}")
    num_layers, num_heads = importance.shape
    if isinstance(min_heads_per_layer, bool) or not isinstance(min_heads_per_layer, int):
        raise TypeError(f"min_heads_per_layer: expected an int, got {min_heads_per_layer!r}")
    if not 1 <= min_heads_per_layer <= num_heads:
        raise ValueError(
            f"min_heads_per_layer: expected an int in [1, {num_heads}] (a layer cannot run with "
            f"no head), got {min_heads_per_layer}"
        )
    scores = importance.detach().double().cpu()
    removed = torch.isnan(scores)
    left = (~removed).sum(dim=1).tolist()
    chosen: HeadMap = {}

    def take(layer: int, head: int) -> None:
        chosen.setdefault(layer, []).append(head)
        left[layer] -= 1

    if scope == "global":
        target = math.floor(share * num_layers * num_heads + 1e-9) - int(removed.sum())
        order = sorted(
            (float(scores[i, j]), i, j)
            for i in range(num_layers)
            for j in range(num_heads)
            if not removed[i, j]
        )
        for _, layer, head in order:
            if target <= 0:
                break
            if left[layer] <= min_heads_per_layer:
                continue
            take(layer, head)
            target -= 1
        if target > 0:
            raise ValueError(
                f"share: {share} of {num_layers * num_heads} heads cannot be removed while keeping "
                f"min_heads_per_layer={min_heads_per_layer} heads in every layer"
            )
    else:
        per_layer = math.floor(share * num_heads + 1e-9)
        if num_heads - per_layer < min_heads_per_layer:
            raise ValueError(
                f"share: removing {per_layer} of {num_heads} heads per layer leaves fewer than "
                f"min_heads_per_layer={min_heads_per_layer}"
            )
        for layer in range(num_layers):
            need = per_layer - int(removed[layer].sum())
            ranked = sorted(
                (float(scores[layer, j]), j) for j in range(num_heads) if not removed[layer, j]
            )
            for _, head in ranked[: max(need, 0)]:
                take(layer, head)
    return {layer: sorted(hs) for layer, hs in sorted(chosen.items())}


def load_head_pruned(
    path: str | Path, model_class: type[PreTrainedModel] | None = None, **kwargs: Any
) -> PreTrainedModel:
    """Load a checkpoint saved after :func:`prune_heads`, with its smaller attention matrices.

    ``model_class`` is a concrete class such as ``BertForSequenceClassification`` (default: the
    first of ``config.architectures``); ``kwargs`` go to ``from_pretrained``. On transformers 4.x
    this is the plain ``from_pretrained``, which prunes from ``config.pruned_heads`` itself. On
    5.x, which dropped that step, a throw-away subclass removes the heads right after the model
    is built, before the weights load; the returned model is of the normal class.

    Example (``path`` written by ``model.save_pretrained`` after :func:`prune_heads`)::

        model = load_head_pruned(path)                      # class from config.architectures
        model = load_head_pruned(path, BertForSequenceClassification, dtype=torch.float32)
    """
    config = AutoConfig.from_pretrained(path)
    if model_class is None:
        model_class = _class_from_architectures(config)
    if not (isinstance(model_class, type) and issubclass(model_class, PreTrainedModel)):
        raise TypeError(
            "model_class: expected a concrete model class such as BertForSequenceClassification "
            f"(not an Auto class), or None to use config.architectures; got {model_class!r}"
        )
    heads = pruned_heads_from_config(config)
    by_transformers = bool(getattr(config, "pruned_heads", None))
    if not heads or (by_transformers and hasattr(PreTrainedModel, "prune_heads")):
        return model_class.from_pretrained(path, **kwargs)  # 4.x prunes config.pruned_heads
    if _counts_described(config):  # the config builds the smaller model; record what is gone
        model = model_class.from_pretrained(path, **kwargs)
        for layer, layer_heads in heads.items():
            head_parts(model)[layer].module.pruned_heads = set(layer_heads)
        return model

    base_class = model_class

    class _HeadPrunedOnInit(base_class):  # type: ignore[valid-type,misc]
        def __init__(self, config: Any, *args: Any, **init_kwargs: Any) -> None:
            super().__init__(config, *args, **init_kwargs)
            num_heads = num_units(self)
            blocks = head_parts(self)
            for layer, layer_heads in pruned_heads_from_config(config).items():
                _remove_heads_from_block(blocks[layer], set(layer_heads), num_heads)

    _HeadPrunedOnInit.__name__ = base_class.__name__
    _HeadPrunedOnInit.__qualname__ = base_class.__qualname__
    model = _HeadPrunedOnInit.from_pretrained(path, **kwargs)
    model.__class__ = base_class  # same modules and state; only the loading step differed
    setattr(model.config, _config_key(model), pruned_heads_from_config(model.config))
    return model


def _class_from_architectures(config: Any) -> type[PreTrainedModel]:
    import transformers

    names = getattr(config, "architectures", None) or []
    found = getattr(transformers, names[0], None) if names else None
    if found is None:
        raise ValueError(
            f"model_class: config.architectures={names!r} names no transformers class; pass one"
        )
    return found
