"""Progressive module replacement (BERT-of-Theseus) on tiny 4-layer BERTs, without a Trainer."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from scipy.stats import binomtest, chi2_contingency
from tiny_bert import tiny_bert
from torch import nn
from transformers import BertForSequenceClassification
from transformers.models.bert.modeling_bert import BertLayer

from loyalkit.compression import (
    ConstantReplacementSchedule,
    LinearReplacementSchedule,
    ModuleReplacementLayers,
    ReplaceableBlock,
    export_successor,
    find_module_replacement,
    prepare_module_replacement,
    replacement_schedule_from_dict,
)


@pytest.fixture(scope="module")
def teacher() -> BertForSequenceClassification:
    return tiny_bert(num_labels=3, num_layers=4, seed=0)


def wrapped(teacher: BertForSequenceClassification, **kwargs: Any) -> BertForSequenceClassification:
    model = copy.deepcopy(teacher)
    prepare_module_replacement(model, kwargs.pop("num_successor_layers", 2), **kwargs)
    return model


def batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 150, (3, 9), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0  # padding exercises the attention mask path
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def logits(
    model: nn.Module, inputs: dict[str, torch.Tensor], seed: int | None = None
) -> torch.Tensor:
    """Logits under a fixed global RNG state, so that two models in train mode draw equal dropout."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        return model(**inputs).logits


def layer_state(layer: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in layer.state_dict().items()}


def assert_same_layer(a: nn.Module, b: nn.Module) -> None:
    state_b = b.state_dict()
    for name, tensor in a.state_dict().items():
        assert torch.equal(tensor, state_b[name]), name


def test_rate_zero_is_the_predecessor_exactly(teacher) -> None:
    model = wrapped(teacher, replacement_rate=0.0)
    inputs = batch()
    # Train mode, dropout on: the draws use a private generator, so dropout masks stay aligned.
    model.train()
    reference = copy.deepcopy(teacher).train()
    assert torch.equal(logits(model, inputs, seed=3), logits(reference, inputs, seed=3))
    # The predecessor path can also be chosen for evaluation.
    find_module_replacement(model).eval_with = "predecessor"
    assert torch.equal(logits(model.eval(), inputs), logits(teacher.eval(), inputs))


def test_rate_one_is_the_exported_successor_exactly(teacher) -> None:
    model = wrapped(teacher, replacement_rate=1.0)
    successor = export_successor(model)
    inputs = batch(1)
    assert torch.equal(logits(model.train(), inputs, 5), logits(successor.train(), inputs, 5))
    # Eval mode runs the successors whatever p is.
    find_module_replacement(model).replacement_rate = 0.0
    assert torch.equal(logits(model.eval(), inputs), logits(successor.eval(), inputs))
    # And the successor is not the predecessor: replacing layers changed the function.
    assert not torch.allclose(logits(model, inputs), logits(teacher.eval(), inputs))


def test_one_bernoulli_draw_per_module_per_forward(teacher) -> None:
    rate, forwards = 0.3, 300
    model = wrapped(teacher, replacement_rate=rate, seed=11).train()
    layers = find_module_replacement(model)
    calls: list[tuple[int, str]] = []
    for index, block in enumerate(layers.blocks):
        for path in ("predecessor", "successor"):
            for layer in getattr(block, path):
                layer.register_forward_hook(lambda *_, i=index, p=path: calls.append((i, p)))
    inputs = {"input_ids": torch.tensor([[2, 7, 9, 3]])}
    draws = []
    for _ in range(forwards):
        calls.clear()
        logits(model, inputs)
        # Each block ran exactly one path, whole: 2 predecessor layers or its 1 successor layer.
        per_block = {i: [p for j, p in calls if j == i] for i in range(2)}
        for paths in per_block.values():
            assert paths in (["predecessor", "predecessor"], ["successor"])
        draws.append([paths == ["successor"] for paths in per_block.values()])
    used = torch.tensor(draws)
    # The share of successor runs per block is Binomial(forwards, rate) ...
    for block in range(2):
        assert binomtest(int(used[:, block].sum()), forwards, rate).pvalue > 1e-3
    # ... the blocks draw independently of each other ...
    table = [[int(((used[:, 0] == a) & (used[:, 1] == b)).sum()) for b in (0, 1)] for a in (0, 1)]
    assert chi2_contingency(table).pvalue > 1e-3
    # ... and consecutive forwards draw afresh (not one draw reused for the whole run).
    assert 0 < int((used[1:, 0] != used[:-1, 0]).sum()) < forwards - 1

    # The same seed replays the same draws.
    layers.manual_seed(11)
    replay = []
    for _ in range(20):
        calls.clear()
        logits(model, inputs)
        replay.append([(i, "successor") in calls for i in range(2)])
    assert replay == draws[:20]


def test_only_the_successor_trains(teacher) -> None:
    model = wrapped(teacher, replacement_rate=1.0).train()
    layers = find_module_replacement(model)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert (
        trainable == {name for name, _ in model.named_parameters() if ".successor." in name}
        and len(trainable) > 0
    )
    # Two successor layers' worth of parameters, counted on a fresh BertLayer.
    per_layer = sum(p.numel() for p in BertLayer(teacher.config).parameters())
    assert sum(p.numel() for p in layers.successor_parameters()) == 2 * per_layer

    labels = torch.tensor([0, 2, 1])
    model(**batch(), labels=labels).loss.backward()
    assert all(p.grad is not None for p in layers.successor_parameters())
    assert all(p.grad is None for n, p in model.named_parameters() if ".successor." not in n)

    # A batch on which every block drew its predecessor trains nothing, yet backward works.
    model.zero_grad(set_to_none=True)
    layers.replacement_rate = 0.0
    model(**batch(), labels=labels).loss.backward()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    ("init", "sources"),
    [("bottom", [0, 1]), ("every_kth", [1, 3]), ([3, 0], [3, 0])],
)
def test_successor_is_copied_from_predecessor_layers(teacher, init, sources) -> None:
    model = wrapped(teacher, successor_init=init)
    layers = find_module_replacement(model)
    successors = [layer for block in layers.blocks for layer in block.successor]
    for successor, source in zip(successors, sources, strict=True):
        assert_same_layer(successor, teacher.bert.encoder.layer[source])
    # Copies, not shared tensors: training the successor leaves the predecessor alone.
    with torch.no_grad():
        successors[0].output.dense.weight.add_(1.0)
    predecessors = [layer for block in layers.blocks for layer in block.predecessor]
    for predecessor, original in zip(predecessors, teacher.bert.encoder.layer, strict=True):
        assert_same_layer(predecessor, original)


def test_export_round_trips_through_save_and_load(teacher, tmp_path: Path) -> None:
    model = wrapped(teacher).eval()
    with torch.no_grad():  # move the successor away from its initial copy
        for p in find_module_replacement(model).successor_parameters():
            p.add_(0.01 * torch.randn_like(p))
    successor = export_successor(model)
    assert type(successor) is BertForSequenceClassification
    assert successor.config.num_hidden_layers == 2 and len(successor.bert.encoder.layer) == 2
    # The predecessor's embeddings, pooler and head come along unchanged.
    teacher_state = teacher.state_dict()
    for name, tensor in successor.state_dict().items():
        if not name.startswith("bert.encoder."):
            assert torch.equal(tensor, teacher_state[name]), name

    successor.save_pretrained(tmp_path)
    reloaded, info = BertForSequenceClassification.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    inputs = batch(2)
    expected = logits(model, inputs)
    assert torch.equal(logits(successor, inputs), expected)
    assert torch.equal(logits(reloaded.eval(), inputs), expected)


def test_saved_wrapped_model_loads_as_successor_and_restores_everything(
    teacher, tmp_path: Path
) -> None:
    model = wrapped(teacher, successor_init="every_kth").eval()
    with torch.no_grad():
        for p in find_module_replacement(model).successor_parameters():
            p.mul_(1.01)
    model.save_pretrained(tmp_path)

    # The checkpoint is a standard 2-layer BERT plus the frozen predecessor under extra keys.
    keys = set(load_file(str(tmp_path / "model.safetensors")))
    plain_two_layer = set(tiny_bert(num_labels=3, num_layers=2).state_dict())
    predecessor_keys = {
        f"bert.encoder.layer.predecessor.{k[len('bert.encoder.layer.') :]}"
        for k in teacher.state_dict()
        if k.startswith("bert.encoder.layer.")
    }
    assert keys == plain_two_layer | predecessor_keys

    reloaded, info = BertForSequenceClassification.from_pretrained(
        tmp_path, output_loading_info=True
    )
    assert not info["missing_keys"]
    assert set(info["unexpected_keys"]) == predecessor_keys
    inputs = batch(3)
    assert torch.equal(logits(reloaded.eval(), inputs), logits(model, inputs))

    # Nothing lost: a model prepared the same way loads every tensor back, strictly.
    restored = wrapped(teacher, successor_init="bottom")
    restored.load_state_dict(load_file(str(tmp_path / "model.safetensors")), strict=True)
    restored_params = dict(restored.named_parameters())
    for name, tensor in model.named_parameters():
        assert torch.equal(restored_params[name], tensor), name


def test_successor_modules_with_several_layers(teacher, tmp_path: Path) -> None:
    # One module: the 4 predecessor layers against a 2-layer successor.
    model = wrapped(teacher, num_successor_layers=2, num_modules=1, replacement_rate=1.0)
    layers = find_module_replacement(model)
    assert len(layers) == 1
    assert layers.predecessor_layers_per_block == 4 and layers.successor_layers_per_block == 2
    successor = export_successor(model)
    successor.save_pretrained(tmp_path)
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    inputs = batch(4)
    assert torch.equal(logits(model.train(), inputs, 9), logits(successor.train(), inputs, 9))
    assert torch.equal(logits(model.eval(), inputs), logits(reloaded, inputs))


class TupleLayer(nn.Module):
    """Stands for a transformers 4.x layer: returns ``(hidden_states, extra)``."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, hidden_states: torch.Tensor, mask: torch.Tensor, *, tag: str) -> tuple:
        return hidden_states * self.factor + mask, f"{tag}-{self.factor}"


def test_block_chains_tuple_returning_layers() -> None:
    block = ReplaceableBlock(
        nn.ModuleList([TupleLayer(2.0), TupleLayer(3.0)]),
        nn.ModuleList([TupleLayer(5.0)]),
        torch.Generator().manual_seed(0),
    ).eval()
    x, mask = torch.tensor([1.0]), torch.tensor([0.5])
    block.eval_with = "predecessor"
    out = block(x, mask, tag="t")
    # (1 * 2 + 0.5) * 3 + 0.5 = 8.0, and the last layer's extra output is passed on.
    assert torch.equal(out[0], torch.tensor([8.0])) and out[1] == "t-3.0"
    block.eval_with = "successor"
    out = block(x, mask, tag="t")
    assert torch.equal(out[0], torch.tensor([5.5])) and out[1] == "t-5.0"


def test_schedules_by_hand() -> None:
    constant = ConstantReplacementSchedule(rate=0.7, replacing_steps=10)
    assert [constant(t) for t in (0, 9, 10, 500)] == [0.7, 0.7, 1.0, 1.0]
    assert ConstantReplacementSchedule(rate=0.5)(10**6) == 0.5
    # The paper's reference curriculum: p = min(1, 0.0006 t + 0.3).
    linear = LinearReplacementSchedule(slope=0.0006, intercept=0.3)
    assert linear(0) == pytest.approx(0.3)
    assert linear(500) == pytest.approx(0.6)
    assert linear(1000) == pytest.approx(0.9)
    assert linear(1166) == pytest.approx(0.9996)
    assert linear(1167) == 1.0 and linear(10**6) == 1.0
    assert LinearReplacementSchedule(slope=0.0, intercept=0.1)(10**6) == pytest.approx(0.1)
    for schedule in (constant, linear):
        assert replacement_schedule_from_dict(schedule.to_dict()) == schedule


@pytest.mark.parametrize(
    ("make", "error", "argument"),
    [
        (lambda: ConstantReplacementSchedule(rate=1.5), ValueError, "rate"),
        (lambda: ConstantReplacementSchedule(rate=-0.1), ValueError, "rate"),
        (lambda: ConstantReplacementSchedule(rate="0.5"), TypeError, "rate"),
        (lambda: ConstantReplacementSchedule(replacing_steps=-1), ValueError, "replacing_steps"),
        (lambda: ConstantReplacementSchedule(replacing_steps=2.5), TypeError, "replacing_steps"),
        (lambda: LinearReplacementSchedule(slope=-0.1), ValueError, "slope"),
        (lambda: LinearReplacementSchedule(slope=float("nan")), ValueError, "slope"),
        (lambda: LinearReplacementSchedule(intercept=1.2), ValueError, "intercept"),
        (lambda: LinearReplacementSchedule()(-1), ValueError, "step"),
        (lambda: ConstantReplacementSchedule()(1.5), TypeError, "step"),
        (lambda: replacement_schedule_from_dict({"kind": "cubic"}), ValueError, "kind"),
        (lambda: replacement_schedule_from_dict([0.5]), TypeError, "data"),
    ],
)
def test_schedule_errors_name_the_argument(make, error, argument) -> None:
    with pytest.raises(error, match=argument):
        make()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"num_successor_layers": 3},
            ValueError,
            r"num_successor_layers=3 must divide .* 4 layers",
        ),
        ({"num_successor_layers": 4}, ValueError, "num_successor_layers=4 must be smaller"),
        ({"num_successor_layers": 0}, ValueError, "num_successor_layers"),
        ({"num_successor_layers": 2, "num_modules": 3}, ValueError, "num_modules=3"),
        ({"num_successor_layers": 3, "num_modules": 2}, ValueError, "num_successor_layers=3"),
        (
            {"num_successor_layers": 3, "num_modules": 1, "successor_init": "every_kth"},
            ValueError,
            "every_kth",
        ),
        ({"num_successor_layers": 2, "successor_init": "top"}, ValueError, "successor_init"),
        ({"num_successor_layers": 2, "successor_init": [0]}, ValueError, "successor_init"),
        ({"num_successor_layers": 2, "successor_init": [0, 4]}, ValueError, "successor_init"),
        ({"num_successor_layers": 2, "replacement_rate": 2.0}, ValueError, "replacement_rate"),
        ({"num_successor_layers": 2, "eval_with": "teacher"}, ValueError, "eval_with"),
    ],
)
def test_prepare_errors_name_the_argument(teacher, kwargs, error, message) -> None:
    model = copy.deepcopy(teacher)
    with pytest.raises(error, match=message):
        prepare_module_replacement(model, **kwargs)
    # A failed preparation leaves the model untouched.
    assert not isinstance(model.bert.encoder.layer, ModuleReplacementLayers)
    assert all(p.requires_grad for p in model.parameters())


def test_misuse_errors(teacher) -> None:
    model = wrapped(teacher)
    with pytest.raises(ValueError, match="already prepared"):
        prepare_module_replacement(model, 2)
    with pytest.raises(ValueError, match="replacement_rate"):
        find_module_replacement(model).replacement_rate = 1.01
    with pytest.raises(ValueError, match="prepare_module_replacement"):
        find_module_replacement(teacher)
    with pytest.raises(ValueError, match="not prepared"):
        export_successor(copy.deepcopy(teacher))
    with pytest.raises(TypeError, match="PreTrainedModel"):
        prepare_module_replacement(nn.Linear(2, 2), 1)  # type: ignore[arg-type]
