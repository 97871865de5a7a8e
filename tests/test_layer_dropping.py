"""Layer dropping: the kept layers compute what a model built with only them computes, and reload.

References, independent of the code under test: a fresh model of the family built from a config
with fewer layers, loaded with the original's state dict renamed layer by layer (this file's own
key renaming); a plain ``AutoModelForSequenceClassification.from_pretrained`` of the saved folder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers
from tiny_architectures import last_hidden, logits, tiny_batch, tiny_classifier
from tiny_bert import tiny_bert
from transformers import AutoModelForSequenceClassification

from loyalkit.compression import (
    drop_layers,
    layers_to_keep,
    load_head_pruned,
    prune_heads,
    remaining_heads,
)

# The layer list's key prefix in each family's state dict (from the transformers source).
PREFIX = {
    "bert": "bert.encoder.layer.",
    "roberta": "roberta.encoder.layer.",
    "xlm-roberta": "roberta.encoder.layer.",
    "electra": "electra.encoder.layer.",
    "deberta-v2": "deberta.encoder.layer.",
    "distilbert": "distilbert.transformer.layer.",
    "modernbert": "model.layers.",
    "gpt2": "transformer.h.",
    "llama": "model.layers.",
    "qwen2": "model.layers.",
}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def built_with_only(model: Any, keep: list[int]) -> Any:
    """A fresh model of ``model``'s class with ``len(keep)`` layers holding the kept weights."""
    config = type(model.config).from_dict(model.config.to_dict())
    config.num_hidden_layers = len(keep)
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = [model.config.layer_types[i] for i in keep]
    fresh = type(model)(config).eval()
    prefix = next(p for p in PREFIX.values() if any(k.startswith(p) for k in model.state_dict()))
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.(.+)")
    renamed = {}
    for key, value in model.state_dict().items():
        match = pattern.fullmatch(key)
        if match is None:
            renamed[key] = value
        elif int(match.group(1)) in keep:
            renamed[f"{prefix}{keep.index(int(match.group(1)))}.{match.group(2)}"] = value
    fresh.load_state_dict(renamed, strict=True)
    return fresh


@pytest.mark.parametrize("arch", list(PREFIX))
def test_kept_layers_compute_what_a_smaller_model_computes_and_reload(
    arch: str, tmp_path: Path
) -> None:
    model = tiny_classifier(arch, layers=4, seed=2)
    batch = tiny_batch(arch)
    keep = [0, 2] if arch == "modernbert" else [0, 1, 3]  # ModernBERT: the first layer is special
    smaller = built_with_only(model, keep)
    expected = last_hidden(smaller, batch)
    assert not torch.allclose(last_hidden(model, batch), expected, atol=1e-3)
    drop_layers(model, keep)
    assert model.config.num_hidden_layers == len(keep)
    torch.testing.assert_close(last_hidden(model, batch), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits(model, batch), logits(smaller, batch), atol=1e-6, rtol=1e-5)
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(reloaded, batch), logits(model, batch), atol=0, rtol=0)


@pytest.mark.parametrize("arch", ["bert", "distilbert", "modernbert", "llama", "gpt2"])
def test_dropping_the_first_layer_reloads_to_the_same_predictions(
    arch: str, tmp_path: Path
) -> None:
    model = tiny_classifier(arch, layers=4, seed=3)
    batch = tiny_batch(arch)
    drop_layers(model, count=2, strategy="alternate")  # keeps 0, 2
    drop_layers(model, [1])  # then only the original layer 2, now layer 0
    assert model.config.num_hidden_layers == 1
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(reloaded, batch), logits(model, batch), atol=0, rtol=0)


def test_strategies_pick_the_layers_of_sajjad_et_al() -> None:
    assert layers_to_keep(6, count=3, strategy="top") == [0, 1, 2]
    assert layers_to_keep(6, count=3, strategy="alternate") == [0, 2, 4]
    assert layers_to_keep(12, count=4, strategy="alternate") == [0, 1, 2, 3, 4, 6, 8, 10]
    assert layers_to_keep(5, count=2, strategy="alternate") == [0, 1, 3]
    with pytest.raises(ValueError, match=r"count: strategy='alternate' drops at most 3 of 6"):
        layers_to_keep(6, count=4, strategy="alternate")


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((), {"count": 0}, r"count: expected an int in \[1, 3\]"),
        ((), {"count": 4}, r"count: expected an int in \[1, 3\]"),
        ((), {}, r"keep, count: pass exactly one of them"),
        (([0, 1],), {"count": 1}, r"keep, count: pass exactly one of them"),
        (([0, 1, 2, 3],), {}, r"keep: lists all 4 layers, so nothing would be dropped"),
        (([],), {}, r"keep: expected at least one layer to keep"),
        (([0, 4],), {}, r"keep: expected distinct layer indices in \[0, 4\)"),
        (([1, 1],), {}, r"keep: expected distinct layer indices"),
        ((), {"count": 1, "strategy": "bottom"}, r"strategy: expected one of top, alternate"),
    ],
)
def test_bad_arguments_are_named(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    model = tiny_bert(num_layers=4)
    with pytest.raises((ValueError, TypeError), match=message):
        drop_layers(model, *args, **kwargs)
    assert len(model.bert.encoder.layer) == 4 and model.config.num_hidden_layers == 4


def test_albert_is_refused_by_name() -> None:
    with pytest.raises(
        ValueError, match=r"layer dropping needs one module per transformer layer, but Albert"
    ):
        drop_layers(tiny_classifier("albert", layers=4), count=2)


def test_removed_heads_follow_their_layers(tmp_path: Path) -> None:
    model = tiny_bert(num_layers=4, seed=1)
    batch = {"input_ids": torch.randint(5, 200, (3, 9), generator=torch.Generator().manual_seed(0))}
    prune_heads(model, {1: [0, 2], 3: [1]})
    drop_layers(model, [1, 3])
    assert model.config.pruned_heads == {0: [0, 2], 1: [1]}
    assert remaining_heads(model) == [[1, 3], [0, 2, 3]]
    model.save_pretrained(tmp_path)
    reloaded = load_head_pruned(tmp_path)
    assert isinstance(reloaded, transformers.BertForSequenceClassification)
    torch.testing.assert_close(logits(reloaded.eval(), batch), logits(model, batch), atol=0, rtol=0)


def test_the_kept_layers_keep_their_parameter_objects() -> None:
    model = tiny_bert(num_layers=4)
    kept = [id(p) for p in model.bert.encoder.layer[2].parameters()]
    drop_layers(model, count=2, strategy="alternate")
    assert [id(p) for p in model.bert.encoder.layer[1].parameters()] == kept
