"""Sparsity schedules and the magnitude pruning primitive, against hand values, torch and numpy."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_bert import tiny_bert
from transformers import BertForSequenceClassification

from loyalkit.compression import (
    CubicSchedule,
    LinearSchedule,
    OneShotSchedule,
    PruningMasks,
    magnitude_masks,
    magnitude_prune,
    prunable_weights,
    sparsity,
    sparsity_per_tensor,
)
from loyalkit.compression.sparsity_schedules import schedule_from_dict, schedule_to_dict

ENCODER_LINEARS = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


def encoder_weight_names(num_layers: int) -> set[str]:
    return {
        f"bert.encoder.layer.{layer}.{module}.weight"
        for layer in range(num_layers)
        for module in ENCODER_LINEARS
    }


def abs_weights(model: torch.nn.Module) -> dict[str, np.ndarray]:
    state = model.state_dict()
    return {
        name: np.abs(state[name].numpy().astype(np.float64)) for name in prunable_weights(model)
    }


# ---- schedules -------------------------------------------------------------------------------


def test_cubic_schedule_by_hand() -> None:
    # s_t = 0.8 + (0.1 - 0.8) * (1 - (t_k - 10) / 40) ** 3 on t_k in {10, 20, 30, 40, 50}, held between.
    schedule = CubicSchedule(
        target_sparsity=0.8, start_step=10, end_step=50, frequency=10, initial_sparsity=0.1
    )
    by_hand = {
        0: 0.0,
        9: 0.0,  # dense before t0
        10: 0.1,  # 0.8 - 0.7 * 1
        19: 0.1,
        20: 0.8 - 0.7 * 0.75**3,  # 0.5046875
        29: 0.8 - 0.7 * 0.75**3,
        30: 0.8 - 0.7 * 0.5**3,  # 0.7125
        40: 0.8 - 0.7 * 0.25**3,  # 0.7890625
        49: 0.8 - 0.7 * 0.25**3,
        50: 0.8,
        1000: 0.8,
    }
    for step, expected in by_hand.items():
        assert schedule.sparsity_at(step) == pytest.approx(expected, abs=1e-12), step
    assert by_hand[20] == pytest.approx(0.5046875)


def test_cubic_schedule_off_grid_end_jumps_to_target() -> None:
    # end - start = 25 is not a multiple of 10: grid points 0, 10, 20, then the target at 25.
    schedule = CubicSchedule(target_sparsity=0.5, start_step=0, end_step=25, frequency=10)
    assert schedule.sparsity_at(10) == pytest.approx(0.5 - 0.5 * (1 - 10 / 25) ** 3)
    assert schedule.sparsity_at(24) == pytest.approx(0.5 - 0.5 * (1 - 20 / 25) ** 3)
    assert schedule.sparsity_at(25) == 0.5


def test_cubic_schedule_matches_torch_cubic_sl_on_pruning_steps() -> None:
    from torch.ao.pruning import WeightNormSparsifier
    from torch.ao.pruning.scheduler.cubic_scheduler import CubicSL

    model = torch.nn.Sequential(torch.nn.Linear(8, 8))
    sparsifier = WeightNormSparsifier(
        sparsity_level=0.8, sparse_block_shape=(1, 1), zeros_per_block=1
    )
    sparsifier.prepare(model, config=[{"tensor_fqn": "0.weight"}])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = CubicSL(
            sparsifier, init_sl=0.1, init_t=10, delta_t=10, total_t=4, initially_zero=True
        )
        theirs = {}
        for _ in range(60):
            sparsifier.step()
            scheduler.step()
            theirs[scheduler.last_epoch] = scheduler.get_last_sl()[0]
    ours = CubicSchedule(
        target_sparsity=0.8, start_step=10, end_step=50, frequency=10, initial_sparsity=0.1
    )
    # CubicSL moves continuously; the schedule of Zhu & Gupta holds its value between pruning steps.
    for step in [1, 5, 9, 10, 20, 30, 40, 50, 55, 60]:
        assert ours.sparsity_at(step) == pytest.approx(theirs[step], abs=1e-12), step
    assert ours.sparsity_at(25) == pytest.approx(theirs[20]) != pytest.approx(theirs[25])


def test_linear_and_one_shot_schedules_by_hand() -> None:
    linear = LinearSchedule(target_sparsity=0.6, start_step=4, end_step=12, frequency=2)
    # 0.6 * (t_k - 4) / 8 with t_k = 4 + 2 * floor((t - 4) / 2).
    expected = {
        0: 0.0,
        3: 0.0,
        4: 0.0,
        5: 0.0,
        6: 0.15,
        7: 0.15,
        8: 0.3,
        10: 0.45,
        12: 0.6,
        99: 0.6,
    }
    for step, value in expected.items():
        assert linear.sparsity_at(step) == pytest.approx(value), step
    every_step = LinearSchedule(target_sparsity=0.5, start_step=0, end_step=4, initial_sparsity=0.1)
    assert [every_step.sparsity_at(t) for t in range(6)] == pytest.approx(
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.5]
    )
    one_shot = OneShotSchedule(target_sparsity=0.7, step=3)
    assert [one_shot.sparsity_at(t) for t in range(6)] == [0.0, 0.0, 0.0, 0.7, 0.7, 0.7]


@pytest.mark.parametrize(
    "schedule",
    [
        OneShotSchedule(target_sparsity=0.3, step=2),
        LinearSchedule(target_sparsity=0.5, start_step=1, end_step=9, frequency=2),
        CubicSchedule(
            target_sparsity=0.9, start_step=0, end_step=30, frequency=3, initial_sparsity=0.2
        ),
    ],
)
def test_schedule_round_trips_through_json_dict(schedule: object) -> None:
    import json

    description = json.loads(json.dumps(schedule_to_dict(schedule)))
    assert schedule_from_dict(description) == schedule


@pytest.mark.parametrize(
    ("make", "error", "argument"),
    [
        (lambda: OneShotSchedule(target_sparsity=1.0), ValueError, "target_sparsity"),
        (lambda: OneShotSchedule(target_sparsity=-0.1), ValueError, "target_sparsity"),
        (lambda: OneShotSchedule(target_sparsity=float("nan")), ValueError, "target_sparsity"),
        (lambda: OneShotSchedule(target_sparsity="0.5"), TypeError, "target_sparsity"),
        (lambda: OneShotSchedule(target_sparsity=0.5, step=-1), ValueError, "step"),
        (lambda: CubicSchedule(0.5, start_step=10, end_step=5), ValueError, "end_step"),
        (lambda: CubicSchedule(0.5, start_step=10, end_step=10), ValueError, "end_step"),
        (
            lambda: CubicSchedule(0.5, start_step=0, end_step=5, frequency=0),
            ValueError,
            "frequency",
        ),
        (
            lambda: LinearSchedule(0.5, start_step=0, end_step=5, frequency=1.5),
            TypeError,
            "frequency",
        ),
        (lambda: LinearSchedule(0.5, start_step=-2, end_step=5), ValueError, "start_step"),
        (lambda: LinearSchedule(0.5, 0, 5, initial_sparsity=0.6), ValueError, "initial_sparsity"),
        (lambda: LinearSchedule(1.5, 0, 5), ValueError, "target_sparsity"),
        (lambda: CubicSchedule(0.5, 0, 5).sparsity_at(-1), ValueError, "step"),
        (lambda: schedule_from_dict({"kind": "exponential"}), ValueError, "kind"),
        (lambda: schedule_to_dict(0.5), TypeError, "schedule"),
    ],
)
def test_schedule_errors_name_the_argument(make, error, argument) -> None:
    with pytest.raises(error, match=argument):
        make()


# ---- the primitive ---------------------------------------------------------------------------


def test_default_selection_is_the_encoder_linear_layers() -> None:
    model = tiny_bert(num_layers=3)
    assert set(prunable_weights(model)) == encoder_weight_names(3)
    layer0 = prunable_weights(model, module_pattern=r"bert\.encoder\.layer\.0\..*")
    assert set(layer0) == {name for name in encoder_weight_names(1)}
    head = prunable_weights(model, module_pattern="classifier")
    assert list(head) == ["classifier.weight"]


@pytest.mark.parametrize("target", [0.3, 0.5, 0.77])
def test_layer_scope_prunes_each_tensor_to_the_target(target: float) -> None:
    model = tiny_bert(num_layers=2, seed=1)
    before = copy.deepcopy(model.state_dict())
    original = abs_weights(model)
    masks = magnitude_prune(model, target, scope="layer")
    after = model.state_dict()
    assert set(masks.masks) == encoder_weight_names(2)
    for name, magnitude in original.items():
        size = magnitude.size
        # Python's round-half-even, as torch.nn.utils.prune: off the target by <= 0.5 / size.
        pruned = round(target * size)
        assert len(np.unique(magnitude)) == size  # no ties: the smallest `pruned` are well defined
        threshold = np.sort(magnitude, axis=None)[pruned - 1]
        kept = magnitude > threshold
        np.testing.assert_array_equal(masks.masks[name].numpy(), kept)
        np.testing.assert_array_equal(after[name].numpy() == 0, ~kept)
        np.testing.assert_array_equal(after[name].numpy()[kept], before[name].numpy()[kept])
        assert abs(sparsity_per_tensor(model)[name] - target) <= 0.5 / size
    for name, value in before.items():  # embeddings, pooler, biases and head are untouched
        if name not in original:
            torch.testing.assert_close(after[name], value, rtol=0, atol=0)


@pytest.mark.parametrize("target", [0.25, 0.6])
def test_global_scope_uses_one_threshold_over_all_weights(target: float) -> None:
    model = tiny_bert(num_layers=2, seed=2)
    large = "bert.encoder.layer.1.intermediate.dense.weight"
    with torch.no_grad():  # one tensor of larger weights: a global threshold spares it
        prunable_weights(model)[large].mul_(4.0)
    original = abs_weights(model)
    everything = np.concatenate([magnitude.ravel() for magnitude in original.values()])
    pruned = round(target * everything.size)
    threshold = np.sort(everything)[pruned - 1]
    assert np.quantile(everything, pruned / everything.size, method="inverted_cdf") == threshold
    masks = magnitude_prune(model, target, scope="global")
    per_tensor = sparsity_per_tensor(model)
    for name, magnitude in original.items():
        np.testing.assert_array_equal(masks.masks[name].numpy(), magnitude > threshold)
        assert per_tensor[name] == pytest.approx(float(np.mean(magnitude <= threshold)))
    assert sparsity(model) == pruned / everything.size
    assert masks.sparsity == pruned / everything.size
    # One threshold, not one share per tensor: the large tensor keeps far more of its weights.
    assert per_tensor[large] < target / 2 < min(v for n, v in per_tensor.items() if n != large)


@pytest.mark.parametrize("target", [0.2, 0.5, 0.9])
def test_masks_match_torch_nn_utils_prune(target: float) -> None:
    from torch.nn.utils import prune

    model = tiny_bert(num_layers=2, seed=7)
    layer_masks = magnitude_masks(model, target, scope="layer")
    global_masks = magnitude_masks(model, target, scope="global")
    by_layer, by_global = copy.deepcopy(model), copy.deepcopy(model)
    module_names = [name.removesuffix(".weight") for name in layer_masks.masks]
    for name in module_names:
        prune.l1_unstructured(by_layer.get_submodule(name), "weight", target)
    prune.global_unstructured(
        [(by_global.get_submodule(name), "weight") for name in module_names],
        pruning_method=prune.L1Unstructured,
        amount=target,
    )
    for reference, ours in ((by_layer, layer_masks), (by_global, global_masks)):
        buffers = dict(reference.named_buffers())
        for name, mask in ours.masks.items():
            expected = buffers[name.replace(".weight", ".weight_mask")].bool()
            assert torch.equal(mask, expected), name


def test_ties_are_broken_to_the_exact_count() -> None:
    linear = torch.nn.Linear(10, 10)
    model = torch.nn.Sequential(linear)
    with torch.no_grad():  # 30 zeros, 50 entries tied at 0.5, 20 at 1.0
        linear.weight.copy_(torch.tensor([0.0] * 30 + [0.5, -0.5] * 25 + [1.0] * 20).view(10, 10))
    for target, expected_kept_ties in ((0.3, 50), (0.55, 25), (0.79, 1)):
        masks = magnitude_masks(model, target, module_pattern="0")
        mask = masks.masks["0.weight"].view(-1)
        assert int((~mask).sum()) == round(target * 100)
        assert not bool(mask[:30].any()) and bool(mask[80:].all())
        assert int(mask[30:80].sum()) == expected_kept_ties


def test_raising_sparsity_keeps_earlier_pruned_weights_pruned() -> None:
    for scope in ("layer", "global"):
        model = tiny_bert(num_layers=2, seed=3)
        first = magnitude_prune(model, 0.3, scope=scope)
        with torch.no_grad():  # training moves the kept weights
            for weight in prunable_weights(model).values():
                kept = weight != 0
                weight.add_(0.01 * torch.randn_like(weight)).mul_(kept)
        second = magnitude_masks(model, 0.6, scope=scope)
        for name, mask in first.masks.items():
            assert not bool((~mask & second.masks[name]).any()), (scope, name)


def test_sparsity_counts_real_zeros() -> None:
    model = tiny_bert(num_layers=1)
    weights = prunable_weights(model)
    with torch.no_grad():
        weights["bert.encoder.layer.0.intermediate.dense.weight"][:5] = 0.0  # 5 rows of 32
    total = sum(weight.numel() for weight in weights.values())
    assert sparsity(model) == 5 * 32 / total
    assert sparsity_per_tensor(model)["bert.encoder.layer.0.intermediate.dense.weight"] == 5 / 64


def test_zero_target_keeps_everything() -> None:
    model = tiny_bert(num_layers=1)
    masks = magnitude_prune(model, 0.0, scope="global")
    assert all(bool(mask.all()) for mask in masks.masks.values())
    assert sparsity(model) == 0.0


def test_pruned_model_saves_plain_weights_and_reloads_to_same_predictions(tmp_path) -> None:
    model = tiny_bert(num_layers=2, seed=4)
    magnitude_prune(model, 0.5, scope="layer")
    assert not any("weight_orig" in n or "weight_mask" in n for n in model.state_dict())
    model.save_pretrained(tmp_path)
    keys = set(load_file(str(tmp_path / "model.safetensors")))
    assert not any(key.endswith(("weight_orig", "weight_mask")) for key in keys)
    reloaded = BertForSequenceClassification.from_pretrained(tmp_path).eval()
    inputs = torch.randint(5, 100, (4, 12))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(inputs).logits, model.eval()(inputs).logits)
    assert sparsity(reloaded) == pytest.approx(0.5, abs=1e-3)


def test_masks_apply_to_another_model_and_check_names() -> None:
    source, target = tiny_bert(num_layers=2, seed=5), tiny_bert(num_layers=2, seed=6)
    masks = magnitude_masks(source, 0.5)
    assert sparsity(source) == 0.0  # computing masks leaves the model alone
    masks.apply(target)
    for name, weight in prunable_weights(target).items():
        np.testing.assert_array_equal(weight.detach().numpy() == 0, ~masks.masks[name].numpy())
    with pytest.raises(ValueError, match="no parameter named"):
        masks.apply(tiny_bert(num_layers=1))
    wrong = PruningMasks({"classifier.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        wrong.apply(target)


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"target_sparsity": 1.0}, ValueError, "target_sparsity"),
        ({"target_sparsity": -0.5}, ValueError, "target_sparsity"),
        ({"target_sparsity": True}, TypeError, "target_sparsity"),
        ({"target_sparsity": 0.5, "scope": "rows"}, ValueError, "scope"),
        ({"target_sparsity": 0.5, "module_pattern": "("}, ValueError, "module_pattern"),
        ({"target_sparsity": 0.5, "module_pattern": "nothing"}, ValueError, "module_pattern"),
        ({"target_sparsity": 0.5, "module_pattern": 3}, TypeError, "module_pattern"),
    ],
)
def test_primitive_errors_name_the_argument(kwargs, error, argument) -> None:
    with pytest.raises(error, match=argument):
        magnitude_prune(tiny_bert(num_layers=1), **kwargs)


def test_model_without_encoder_needs_a_module_pattern() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match="module_pattern"):
        magnitude_masks(model, 0.5)
    masks = magnitude_prune(model, 0.5, module_pattern="0|2")
    assert set(masks.masks) == {"0.weight", "2.weight"}
    assert sparsity(model, module_pattern="0|2") == 0.5
    with pytest.raises(TypeError, match="model"):
        prunable_weights("bert")
