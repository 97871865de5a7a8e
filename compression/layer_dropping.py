"""Layer dropping (depth): keep some of a classifier's transformer layers, in one call.

Sajjad, Dalvi, Durrani and Nakov ("On the Effect of Dropping Layers of Pre-trained Transformer
Models", Computer Speech & Language 2023) drop whole layers of a fine-tuned or pre-trained model
and fine-tune what is left; dropping the top layers worked best among their strategies, dropping
alternate layers from the top came next. :func:`drop_layers` removes the layers in place: the
kept layers keep their parameter objects (an optimizer built before still trains them), are
renumbered as ``from_pretrained`` builds them, and the config's depth and per-layer lists
(``num_hidden_layers``, ModernBERT's and Qwen2's ``layer_types``, the removed heads recorded by
:func:`~loyalkit.compression.prune_heads`) now describe the smaller model, so a plain
``from_pretrained`` of the saved folder reloads it. The renumbering and the checks are those of
:mod:`loyalkit.compression.module_replacement`, whose exported successor is the same kind of model.

Example:
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> model = BertForSequenceClassification(BertConfig(
    ...     vocab_size=50, hidden_size=16, num_hidden_layers=6, num_attention_heads=4,
    ...     intermediate_size=32))
    >>> _ = drop_layers(model, count=3, strategy="alternate")
    >>> model.config.num_hidden_layers, len(model.bert.encoder.layer)
    (3, 3)
    >>> layers_to_keep(6, count=2, strategy="top"), layers_to_keep(6, count=2, strategy="alternate")
    ([0, 1, 2, 3], [0, 1, 2, 4])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from torch import nn

from loyalkit.compression.architectures import per_layer_stack
from loyalkit.compression.head_pruning import OWN_CONFIG_KEY
from loyalkit.compression.module_replacement import (
    ModuleReplacementLayers,
    _check_attention_pattern,
    _renumber,
)

__all__ = ["LAYER_DROPPING_STRATEGIES", "drop_layers", "layers_to_keep"]

Strategy = Literal["top", "alternate"]
LAYER_DROPPING_STRATEGIES: tuple[str, ...] = ("top", "alternate")


def layers_to_keep(num_layers: int, *, count: int, strategy: Strategy = "top") -> list[int]:
    """The layers left after dropping ``count`` of ``num_layers`` by ``strategy``.

    ``"top"`` drops the last ``count`` layers; ``"alternate"`` drops every other layer from the
    top (``num_layers - 1``, ``num_layers - 3``, ...), as Sajjad et al. do.
    """
    if isinstance(count, bool) or not isinstance(count, int):
        raise TypeError(f"count: expected an int >= 1 (layers to drop), got {count!r}")
    if not 1 <= count < num_layers:
        raise ValueError(
            f"count: expected an int in [1, {num_layers - 1}] (layers to drop of {num_layers}, "
            f"keeping at least one), got {count}"
        )
    if strategy == "top":
        return list(range(num_layers - count))
    if strategy == "alternate":
        candidates = list(range(num_layers - 1, -1, -2))
        if count > len(candidates):
            raise ValueError(
                f"count: strategy='alternate' drops at most {len(candidates)} of {num_layers} "
                f"layers (every other one), got {count}"
            )
        dropped = set(candidates[:count])
        return [i for i in range(num_layers) if i not in dropped]
    raise ValueError(
        f"strategy: expected one of {', '.join(LAYER_DROPPING_STRATEGIES)}, got {strategy!r}"
    )


def check_keep(keep: Sequence[int], num_layers: int) -> list[int]:
    """``keep`` as sorted distinct layer indices; at least one layer kept and one dropped."""
    if isinstance(keep, (str, bytes)) or not isinstance(keep, Sequence):
        raise TypeError(f"keep: expected a list of layer indices, got {keep!r}")
    bad: list[object] = [
        i for i in keep if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < num_layers
    ]
    if bad or len(set(keep)) != len(keep):
        raise ValueError(
            f"keep: expected distinct layer indices in [0, {num_layers}), got {list(keep)}"
        )
    if not keep:
        raise ValueError("keep: expected at least one layer to keep, got none")
    if len(keep) == num_layers:
        raise ValueError(
            f"keep: lists all {num_layers} layers, so nothing would be dropped; name fewer"
        )
    return sorted(keep)


def _remap_heads(config: Any, kept: list[int]) -> None:
    """Re-index the removed heads a config records by layer (their layers moved or went)."""
    for key in ("pruned_heads", OWN_CONFIG_KEY):
        recorded = getattr(config, key, None)
        if recorded:
            heads = {int(layer): list(hs) for layer, hs in dict(recorded).items()}
            moved = {new: heads[old] for new, old in enumerate(kept) if heads.get(old)}
            setattr(config, key, moved)


def drop_layers(
    model: nn.Module,
    keep: Sequence[int] | None = None,
    *,
    count: int | None = None,
    strategy: Strategy = "top",
) -> nn.Module:
    """Keep only the layers ``keep`` (indices), or drop ``count`` layers by ``strategy``; in place.

    Returns ``model``. Any family with one module per layer (not ALBERT's shared layers).
    """
    stack = per_layer_stack(model, "layer dropping")
    if isinstance(stack.layers, ModuleReplacementLayers):
        raise ValueError(
            "model: its layers are wrapped for module replacement; drop layers of the exported "
            "successor (export_successor) instead"
        )
    layers = list(stack.layers)
    if (keep is None) == (count is None):
        raise ValueError(
            f"keep, count: pass exactly one of them, got keep={keep!r}, count={count!r}"
        )
    if keep is None:
        assert count is not None
        kept = layers_to_keep(len(layers), count=count, strategy=strategy)
    else:
        kept = check_keep(keep, len(layers))
    config: Any = model.config
    try:
        _check_attention_pattern(model, kept)
    except ValueError as error:  # worded for module replacement's successor_init
        raise ValueError(f"keep: {error}".replace("successor_init: ", "")) from None
    new = nn.ModuleList(layers[i] for i in kept)
    for position, layer in enumerate(new):
        _renumber(layer, position, like=layers[position])
    setattr(stack.owner, stack.attribute, new)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == len(layers):
        config.layer_types = [layer_types[i] for i in kept]
    config.num_hidden_layers = len(kept)
    _remap_heads(config, kept)
    return model
