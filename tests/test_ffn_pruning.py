"""Feed-forward neuron pruning: exact slicing, config that still describes the model, importance.

References, independent of the code under test: the original model with the removed neurons'
activations zeroed by a forward pre-hook on each layer's output projection (found by this file's
own module names); a plain ``AutoModelForSequenceClassification.from_pretrained`` of the saved
folder; magnitude scores computed with NumPy from the weights; gradient scores computed per
example from the parameter gradient of the output projection (first-order Taylor,
``|sum_i W[i, j] dL/dW[i, j]|``), one forward per example.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tiny_architectures import last_hidden, logits, tiny_batch, tiny_classifier
from tiny_bert import tiny_bert
from transformers import AutoModelForSequenceClassification

from loyalkit.compression import (
    ffn_parts,
    gradient_ffn_importance,
    magnitude_ffn_importance,
    prune_ffn,
    remove_ffn_neurons,
    select_ffn_neurons,
    zero_ffn_neurons,
    zeroed_ffn_neurons,
)

# Each family's feed-forward output projection, and the config key of the intermediate size
# (written from the transformers source).
OUTPUT = {
    "bert": r"bert\.encoder\.layer\.\d+\.output\.dense",
    "roberta": r"roberta\.encoder\.layer\.\d+\.output\.dense",
    "xlm-roberta": r"roberta\.encoder\.layer\.\d+\.output\.dense",
    "electra": r"electra\.encoder\.layer\.\d+\.output\.dense",
    "deberta-v2": r"deberta\.encoder\.layer\.\d+\.output\.dense",
    "distilbert": r"distilbert\.transformer\.layer\.\d+\.ffn\.lin2",
    "modernbert": r"model\.layers\.\d+\.mlp\.Wo",
    "gpt2": r"transformer\.h\.\d+\.mlp\.c_proj",
    "llama": r"model\.layers\.\d+\.mlp\.down_proj",
    "qwen2": r"model\.layers\.\d+\.mlp\.down_proj",
}
CONFIG_KEY = {"distilbert": "hidden_dim", "gpt2": "n_inner"}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def output_projections(arch: str, model: torch.nn.Module) -> list[Any]:
    pattern = re.compile(OUTPUT[arch])
    return [m for name, m in model.named_modules() if pattern.fullmatch(name)]


def neurons_of(module: Any) -> int:
    # Linear: (out, in); GPT-2's Conv1D: (in, out)
    return int(
        module.weight.shape[0] if type(module).__name__ == "Conv1D" else module.weight.shape[1]
    )


def zeroed_reference(
    arch: str, model: torch.nn.Module, removed: list[list[int]], batch: Any
) -> Any:
    """The original model's logits with the removed neurons' activations set to zero."""
    handles = []
    for module, gone in zip(output_projections(arch, model), removed, strict=True):

        def zero(mod: Any, args: tuple[Any, ...], gone: list[int] = gone) -> tuple[Any, ...]:
            x = args[0].clone()
            x[..., gone] = 0
            return (x, *args[1:])

        handles.append(module.register_forward_pre_hook(zero))
    try:
        return last_hidden(model, batch)
    finally:
        for handle in handles:
            handle.remove()


@pytest.mark.parametrize("arch", list(OUTPUT))
def test_removed_neurons_compute_what_zeroed_activations_compute_and_reload(
    arch: str, tmp_path: Path
) -> None:
    model = tiny_classifier(arch, layers=2, seed=3)
    batch = tiny_batch(arch)
    projections = output_projections(arch, model)
    assert len(projections) == 2
    size = neurons_of(projections[0])
    generator = torch.Generator().manual_seed(1)
    removed = [sorted(torch.randperm(size, generator=generator)[:24].tolist()) for _ in range(2)]
    expected = zeroed_reference(arch, model, removed, batch)
    original = last_hidden(model, batch)
    assert not torch.allclose(original, expected, atol=1e-3)  # the neurons mattered

    remove_ffn_neurons(model, removed)
    assert [neurons_of(m) for m in output_projections(arch, model)] == [size - 24] * 2
    assert getattr(model.config, CONFIG_KEY.get(arch, "intermediate_size")) == size - 24
    torch.testing.assert_close(last_hidden(model, batch), expected, atol=1e-5, rtol=1e-5)

    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    torch.testing.assert_close(logits(reloaded, batch), logits(model, batch), atol=0, rtol=0)


@pytest.mark.parametrize("arch", ["bert", "distilbert", "llama", "gpt2"])
def test_zeroed_output_columns_are_the_removed_model(arch: str) -> None:
    model = tiny_classifier(arch, layers=2, seed=4)
    batch = tiny_batch(arch)
    removed = [[0, 5, 9], [1, 2, 60]]
    zero_ffn_neurons(model, removed)
    assert zeroed_ffn_neurons(model) == removed
    silenced = logits(model, batch)
    remove_ffn_neurons(model, zeroed_ffn_neurons(model))
    torch.testing.assert_close(logits(model, batch), silenced, atol=1e-5, rtol=1e-5)


def _numpy_weight(module: Any) -> np.ndarray:
    """(out, in) as nn.Linear stores it, for Linear and Conv1D alike."""
    weight = module.weight.detach().double().numpy()
    return weight.T if type(module).__name__ == "Conv1D" else weight


def test_magnitude_importance_is_the_norm_of_each_neurons_weights() -> None:
    bert = tiny_bert(num_layers=2, seed=5)
    for index, layer in enumerate(bert.bert.encoder.layer):
        w_in = _numpy_weight(layer.intermediate.dense)
        w_out = _numpy_weight(layer.output.dense)
        hand = np.sqrt((w_in**2).sum(axis=1) + (w_out**2).sum(axis=0))
        np.testing.assert_allclose(magnitude_ffn_importance(bert)[index].numpy(), hand, rtol=1e-12)
    llama = tiny_classifier("llama", layers=2, seed=5)
    mlp = llama.model.layers[1].mlp
    gate, up, down = (_numpy_weight(m) for m in (mlp.gate_proj, mlp.up_proj, mlp.down_proj))
    hand = np.sqrt((gate**2).sum(1) + (up**2).sum(1) + (down**2).sum(0))
    np.testing.assert_allclose(magnitude_ffn_importance(llama)[1].numpy(), hand, rtol=1e-12)
    modern = tiny_classifier("modernbert", layers=1, seed=5)
    wi, wo = (
        _numpy_weight(modern.model.layers[0].mlp.Wi),
        _numpy_weight(modern.model.layers[0].mlp.Wo),
    )
    half = wi.shape[0] // 2  # Wi = [input | gate]
    hand = np.sqrt((wi[:half] ** 2).sum(1) + (wi[half:] ** 2).sum(1) + (wo**2).sum(0))
    np.testing.assert_allclose(magnitude_ffn_importance(modern)[0].numpy(), hand, rtol=1e-12)


@pytest.mark.parametrize("arch", ["bert", "gpt2"])
def test_gradient_importance_is_the_per_example_taylor_score(arch: str) -> None:
    model = tiny_classifier(arch, layers=2, seed=6)
    batch = tiny_batch(arch, rows=4)
    projections = output_projections(arch, model)
    rows = batch["input_ids"].shape[0]
    hand = np.zeros((2, neurons_of(projections[0])))
    for row in range(rows):
        example = {k: v[row : row + 1] for k, v in batch.items()}
        loss = model(**example).loss
        weights = [m.weight for m in projections]
        grads = torch.autograd.grad(loss, weights)
        for layer, (weight, grad) in enumerate(zip(weights, grads, strict=True)):
            w, g = (
                _numpy_weight_of(weight, projections[layer]),
                _numpy_weight_of(grad, projections[layer]),
            )
            hand[layer] += np.abs((w * g).sum(axis=0))
    hand /= rows
    scores = gradient_ffn_importance(model, [batch])
    np.testing.assert_allclose(scores.numpy(), hand, rtol=1e-6, atol=1e-9)
    assert all(p.grad is None for p in model.parameters())  # parameter gradients untouched


def _numpy_weight_of(tensor: torch.Tensor, module: Any) -> np.ndarray:
    array = tensor.detach().double().numpy()
    return array.T if type(module).__name__ == "Conv1D" else array


def test_prune_ffn_removes_the_least_important_neurons_of_every_layer() -> None:
    model = tiny_bert(num_layers=2, seed=7)
    batch = tiny_batch("bert", rows=4)
    batch["input_ids"] = batch["input_ids"] % 200
    hand_order = []
    for layer in model.bert.encoder.layer:
        w_in, w_out = _numpy_weight(layer.intermediate.dense), _numpy_weight(layer.output.dense)
        norms = np.sqrt((w_in**2).sum(axis=1) + (w_out**2).sum(axis=0))
        hand_order.append(sorted(np.argsort(norms, kind="stable")[:16].tolist()))
    removed = prune_ffn(model, fraction=0.25)
    assert removed == hand_order
    assert model.config.intermediate_size == 48
    scores = gradient_ffn_importance(model, [batch])
    assert scores.shape == (2, 48)
    removed = prune_ffn(model, count=8, importance=scores)
    assert removed == [
        sorted(np.argsort(row, kind="stable")[:8].tolist()) for row in scores.numpy()
    ]
    assert model.config.intermediate_size == 40


def test_selection_breaks_ties_towards_the_lower_index() -> None:
    scores = torch.tensor([[1.0, 0.5, 0.5, 0.5], [0.0, 0.0, 3.0, 0.0]])
    assert select_ffn_neurons(scores, count=2) == [[1, 2], [0, 1]]
    assert select_ffn_neurons(scores, fraction=0.75) == [[1, 2, 3], [0, 1, 3]]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"fraction": 0.0}, ValueError, r"fraction: expected a number in \(0, 1\), got 0.0"),
        ({"fraction": 1.0}, ValueError, r"fraction: expected a number in \(0, 1\)"),
        ({"fraction": 0.01}, ValueError, r"fraction: 0.01 of 64 neurons per layer removes none"),
        ({"fraction": "half"}, TypeError, r"fraction: expected a number"),
        ({"count": 0}, ValueError, r"count: expected an int in \[1, 63\]"),
        ({"count": 64}, ValueError, r"count: expected an int in \[1, 63\]"),
        ({"count": 2.0}, TypeError, r"count: expected an int"),
        ({}, ValueError, r"fraction, count: pass exactly one of them"),
        ({"fraction": 0.5, "count": 3}, ValueError, r"fraction, count: pass exactly one"),
        (
            {"fraction": 0.5, "importance": "random"},
            ValueError,
            r"importance: expected 'magnitude'",
        ),
        (
            {"count": 2, "importance": torch.zeros(3, 64)},
            ValueError,
            r"importance: expected a tensor of shape \(2, 64\)",
        ),
    ],
)
def test_bad_arguments_are_named(kwargs: dict[str, Any], error: type, message: str) -> None:
    model = tiny_bert(num_layers=2)
    with pytest.raises(error, match=message):
        prune_ffn(model, **kwargs)
    assert model.config.intermediate_size == 64  # nothing changed


@pytest.mark.parametrize(
    ("neurons", "message"),
    [
        ([[0, 1], [2]], r"neurons: every layer must lose the same number"),
        ([[], []], r"neurons: no neuron named; removing nothing is not pruning"),
        ([[0, 0], [1, 2]], r"neurons: layer 0 must list distinct ints in \[0, 64\)"),
        ([[64], [1]], r"neurons: layer 0 must list distinct ints"),
        ([[1]], r"neurons: expected one list per layer \(2 layers\), got 1"),
        ([list(range(64)), list(range(64))], r"leaves a layer with none"),
    ],
)
def test_bad_neuron_lists_are_refused(neurons: Any, message: str) -> None:
    model = tiny_bert(num_layers=2)
    with pytest.raises(ValueError, match=message):
        remove_ffn_neurons(model, neurons)
    assert model.bert.encoder.layer[0].intermediate.dense.weight.shape == (64, 32)


def test_albert_and_unknown_layouts_are_refused_by_class_name() -> None:
    with pytest.raises(ValueError, match=r"AlbertForSequenceClassification .*shares"):
        ffn_parts(tiny_classifier("albert", layers=2))

    class Unusual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = type("Config", (), {"num_hidden_layers": 2})()
            self.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)])

    with pytest.raises(
        ValueError, match=r"feed-forward layout of Unusual .*supported families: bert"
    ):
        prune_ffn(Unusual(), fraction=0.5)
