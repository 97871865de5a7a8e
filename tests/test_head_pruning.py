"""Attention-head importance and physical head removal, against independent computations.

References: a masked forward pass that zeroes a head's columns of the attention output projection
by direct slicing (what removing a head must equal), hand-counted parameters, numpy norms of the
raw weights, central finite differences of per-example losses, and (on transformers 4.x) the
library's own ``head_mask``.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers
from tiny_bert import tiny_bert
from transformers import (
    AutoModelForSequenceClassification,
    BertForSequenceClassification,
    PreTrainedModel,
)

from loyalkit.compression import (
    gradient_head_importance,
    load_head_pruned,
    magnitude_head_importance,
    prune_heads,
    pruned_heads_from_config,
    remaining_heads,
    select_heads_to_prune,
    zero_head_outputs,
    zeroed_heads,
)

HIDDEN, HEADS, HEAD_SIZE = 32, 4, 8  # tests/tiny_bert.py
NATIVE_CONFIG_PRUNING = hasattr(PreTrainedModel, "prune_heads")  # transformers 4.x


def inputs(seed: int = 0, batch: int = 3, length: int = 9) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, -3:] = 0  # padding must not matter
    labels = torch.arange(batch) % 2
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def silenced_copy(model: torch.nn.Module, heads: dict[int, list[int]]) -> torch.nn.Module:
    """The unpruned model with each head's context zeroed: its output-projection columns set to 0."""
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for layer, layer_heads in heads.items():
            dense = reference.bert.encoder.layer[layer].attention.output.dense
            for head in layer_heads:
                dense.weight[:, head * HEAD_SIZE : (head + 1) * HEAD_SIZE] = 0
    return reference


# ---- physical removal ------------------------------------------------------------------------


def test_pruned_logits_equal_masked_forward() -> None:
    model = tiny_bert(num_layers=3, seed=1).double()  # float64: tiny logits, tight tolerances
    heads = {0: [1, 3], 2: [0]}
    expected = logits(silenced_copy(model, heads), inputs())
    assert (expected - logits(model, inputs())).abs().max() > 1e-5  # the heads matter
    prune_heads(model, heads)
    assert torch.allclose(logits(model, inputs()), expected, rtol=1e-9, atol=1e-12)
    assert model.bert.encoder.layer[0].attention.self.query.weight.dtype == torch.float64
    assert remaining_heads(model) == [[0, 2], [0, 1, 2, 3], [1, 2, 3]]
    assert model.config.pruned_heads == heads
    assert model.bert.encoder.layer[0].attention.self.query.out_features == 2 * HEAD_SIZE


def test_pruning_twice_keeps_original_head_numbers() -> None:
    model = tiny_bert(num_layers=2, seed=2).double()
    expected = logits(silenced_copy(model, {0: [1, 3], 1: [0, 2]}), inputs())
    prune_heads(model, {0: [1], 1: [2]})
    prune_heads(model, {0: [3, 1], 1: [0]})  # head 1 again: ignored
    assert torch.allclose(logits(model, inputs()), expected, rtol=1e-9, atol=1e-12)
    assert model.config.pruned_heads == {0: [1, 3], 1: [0, 2]}
    assert remaining_heads(model) == [[0, 2], [1, 3]]


def test_parameter_count_matches_hand_calculation() -> None:
    model = tiny_bert(num_layers=2)
    before = sum(p.numel() for p in model.parameters())
    prune_heads(model, {0: [0, 1, 2], 1: [3]})
    # per head: query, key, value rows (HIDDEN weights + 1 bias each per row, HEAD_SIZE rows)
    # and HEAD_SIZE columns of the output projection (HIDDEN weights each, the bias stays)
    per_head = 3 * HEAD_SIZE * (HIDDEN + 1) + HEAD_SIZE * HIDDEN
    assert per_head == 1048
    assert sum(p.numel() for p in model.parameters()) == before - 4 * per_head


def test_save_and_load_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = tiny_bert(num_layers=2, seed=3)
    prune_heads(model, {0: [2], 1: [0, 3]})
    expected = logits(model, inputs())
    model.save_pretrained(tmp_path)
    for loaded in (
        load_head_pruned(tmp_path),
        load_head_pruned(tmp_path, BertForSequenceClassification),
    ):
        assert type(loaded) is BertForSequenceClassification
        assert torch.equal(logits(loaded, inputs()), expected)
        assert remaining_heads(loaded) == [[0, 1, 3], [1, 2]]
        assert pruned_heads_from_config(loaded.config) == {0: [2], 1: [0, 3]}
        # pruning further after a reload still counts heads by their original number
        prune_heads(loaded, {1: [1]})
        assert remaining_heads(loaded) == [[0, 1, 3], [2]]
    if NATIVE_CONFIG_PRUNING:  # 4.x: plain from_pretrained prunes from config.pruned_heads
        for cls in (BertForSequenceClassification, AutoModelForSequenceClassification):
            assert torch.equal(logits(cls.from_pretrained(tmp_path), inputs()), expected)
    else:  # 5.x cannot rebuild the shapes and says so loudly (no silent random weights)
        with pytest.raises(RuntimeError, match="mismatch"):
            BertForSequenceClassification.from_pretrained(tmp_path)


def test_zeroing_heads_equals_removing_them() -> None:
    model = tiny_bert(num_layers=2, seed=4).double()
    heads = {0: [0, 3], 1: [2]}
    zeroed = copy.deepcopy(model)
    zero_head_outputs(zeroed, heads)
    assert zeroed_heads(zeroed) == heads
    assert zeroed_heads(model) == {}
    prune_heads(model, heads)
    assert torch.allclose(logits(zeroed, inputs()), logits(model, inputs()), rtol=1e-9, atol=1e-12)
    zero_head_outputs(model, {1: [3]})  # layer 1 keeps heads 0, 1, 3: head 3 is third
    dense = model.bert.encoder.layer[1].attention.output.dense.weight
    assert not dense[:, 2 * HEAD_SIZE :].any() and dense[:, : 2 * HEAD_SIZE].abs().min() > 0
    assert zeroed_heads(model) == {1: [3]}


# ---- importance ------------------------------------------------------------------------------


def test_magnitude_importance_matches_numpy() -> None:
    model = tiny_bert(num_layers=2, seed=5)
    prune_heads(model, {1: [2]})
    state = {k: v.numpy().astype(np.float64) for k, v in model.state_dict().items()}
    expected = np.full((2, HEADS), np.nan)
    for layer, kept in enumerate(([0, 1, 2, 3], [0, 1, 3])):
        prefix = f"bert.encoder.layer.{layer}.attention."
        for position, head in enumerate(kept):
            rows = slice(position * HEAD_SIZE, (position + 1) * HEAD_SIZE)
            parts = [state[prefix + f"self.{n}.weight"][rows, :] for n in ("query", "key", "value")]
            parts.append(state[prefix + "output.dense.weight"][:, rows])
            expected[layer, head] = np.sqrt(sum(float(np.sum(p**2)) for p in parts))
    scores = magnitude_head_importance(model).numpy()
    np.testing.assert_allclose(scores, expected, rtol=1e-12)
    normalised = magnitude_head_importance(model, normalize=True).numpy()
    np.testing.assert_allclose(
        normalised, expected / np.sqrt(np.nansum(expected**2, axis=1, keepdims=True)), rtol=1e-12
    )


def finite_difference_importance(
    model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], eps: float = 1e-5
) -> np.ndarray:
    """E_x |dL(x)/d xi_h| by central differences: scaling a head's output columns by xi scales its
    context by xi. Per-example cross-entropy, float64."""
    num_layers = len(model.bert.encoder.layer)
    kept = remaining_heads(model)
    per_example: list[np.ndarray] = []
    for batch in batches:
        grads = np.full((len(batch["labels"]), num_layers, HEADS), np.nan)
        for layer in range(num_layers):
            for position, head in enumerate(kept[layer]):
                losses = []
                for factor in (1 + eps, 1 - eps):
                    scaled = copy.deepcopy(model)
                    dense = scaled.bert.encoder.layer[layer].attention.output.dense
                    with torch.no_grad():
                        dense.weight[:, position * HEAD_SIZE : (position + 1) * HEAD_SIZE] *= factor
                    out = logits(scaled, batch)
                    losses.append(F.cross_entropy(out, batch["labels"], reduction="none").numpy())
                grads[:, layer, head] = (losses[0] - losses[1]) / (2 * eps)
        per_example.append(grads)
    return np.abs(np.concatenate(per_example)).mean(axis=0)


@pytest.mark.parametrize("pruned", [{}, {0: [1], 1: [0, 2]}])
def test_gradient_importance_matches_finite_differences(pruned: dict[int, list[int]]) -> None:
    model = tiny_bert(num_layers=2, seed=6).double()
    prune_heads(model, pruned)
    batches = [inputs(seed=0, batch=3), inputs(seed=1, batch=2, length=6)]
    expected = finite_difference_importance(model, batches)
    raw = gradient_head_importance(model, batches, normalize=False).numpy()
    np.testing.assert_allclose(raw, expected, rtol=1e-6, atol=1e-9)
    assert np.isnan(raw).sum() == sum(len(h) for h in pruned.values())
    normalised = gradient_head_importance(model, batches).numpy()
    layer_norms = np.sqrt(np.nansum(expected**2, axis=1, keepdims=True))
    np.testing.assert_allclose(normalised, expected / layer_norms, rtol=1e-6, atol=1e-9)
    assert all(p.grad is None for p in model.parameters())  # parameter gradients untouched


@pytest.mark.skipif(
    int(transformers.__version__.split(".")[0]) >= 5,
    reason="head_mask exists only in transformers 4",
)
def test_gradient_importance_matches_head_mask_gradient_on_transformers_4() -> None:
    model = tiny_bert(num_layers=2, seed=7).double()
    model.config._attn_implementation = "eager"
    batch = inputs(seed=2, batch=4)
    total = np.zeros((2, HEADS))
    for example in range(4):  # head_mask is shared by the batch: one example at a time
        mask = torch.ones(2, HEADS, dtype=torch.float64, requires_grad=True)
        one = {k: v[example : example + 1] for k, v in batch.items()}
        model(**one, head_mask=mask).loss.backward()
        total += mask.grad.abs().numpy()
    raw = gradient_head_importance(model, [batch], normalize=False).numpy()
    np.testing.assert_allclose(raw, total / 4, rtol=1e-8)


# ---- selection -------------------------------------------------------------------------------


def test_select_heads_global_and_per_layer_by_hand() -> None:
    scores = torch.tensor(
        [[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, float("nan"), 0.7], [0.05, 0.06, 0.07, 0.95]]
    )
    # 12 heads, share 0.5 -> 6 gone, 1 already: the 5 lowest are 0.05, 0.06, 0.07, 0.1, 0.2
    assert select_heads_to_prune(scores, 0.5) == {0: [1], 1: [0], 2: [0, 1, 2]}
    # keeping 2 heads per layer: 0.07 of layer 2 is skipped, 0.3 of layer 0 taken instead
    assert select_heads_to_prune(scores, 0.5, min_heads_per_layer=2) == {
        0: [1, 3],
        1: [0],
        2: [0, 1],
    }
    assert select_heads_to_prune(scores, 0.5, scope="layer") == {0: [1, 3], 1: [0], 2: [0, 1]}
    assert select_heads_to_prune(scores, 0.0) == {}
    assert select_heads_to_prune(scores, 1 / 12) == {}  # the removed head already counts


# ---- errors ----------------------------------------------------------------------------------


def test_bad_arguments_raise_named_errors(tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = tiny_bert(num_layers=2)
    scores = magnitude_head_importance(model)
    for share in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="share"):
            select_heads_to_prune(scores, share)
    with pytest.raises(TypeError, match="share"):
        select_heads_to_prune(scores, float("nan"))
    with pytest.raises(ValueError, match="min_heads_per_layer"):
        select_heads_to_prune(scores, 0.5, min_heads_per_layer=0)
    with pytest.raises(ValueError, match="share"):  # 0.9 of 8 heads = 7, but 2 must stay
        select_heads_to_prune(scores, 0.9)
    with pytest.raises(ValueError, match="share"):  # 3 of 4 per layer, but 2 must stay
        select_heads_to_prune(scores, 0.9, scope="layer", min_heads_per_layer=2)
    with pytest.raises(ValueError, match="scope"):
        select_heads_to_prune(scores, 0.5, scope="model")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="importance"):
        select_heads_to_prune(scores[0], 0.5)
    with pytest.raises(ValueError, match="leaves no head"):
        prune_heads(model, {0: [0, 1, 2, 3]})
    prune_heads(model, {1: [0, 1]})
    with pytest.raises(ValueError, match="leaves no head"):
        prune_heads(model, {1: [2, 3]})
    assert remaining_heads(model) == [[0, 1, 2, 3], [2, 3]]  # a refused call changes nothing
    with pytest.raises(ValueError, match="layer 5"):
        prune_heads(model, {5: [0]})
    with pytest.raises(ValueError, match="heads"):
        prune_heads(model, {0: [4]})
    with pytest.raises(TypeError, match="heads"):
        prune_heads(model, [(0, 1)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already removed"):
        zero_head_outputs(model, {1: [0]})
    with pytest.raises(ValueError, match="Linear: no list of transformer layers"):
        prune_heads(torch.nn.Linear(2, 2), {0: [0]})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="labels"):
        gradient_head_importance(model, [{"input_ids": inputs()["input_ids"]}])
    with pytest.raises(ValueError, match="at least one batch"):
        gradient_head_importance(model, [])
    model.save_pretrained(tmp_path)
    with pytest.raises(TypeError, match="model_class"):
        load_head_pruned(tmp_path, AutoModelForSequenceClassification)  # type: ignore[arg-type]
