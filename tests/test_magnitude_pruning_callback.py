"""MagnitudePruningCallback in real ``Trainer.train()`` runs of a few steps on a tiny BERT."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_bert import tiny_bert
from trainer_helpers import (
    TrainingRecorder,
    checkpointed_training_args,
    plain_trainer,
    probe_batch,
)
from transformers import BertForSequenceClassification, Trainer

from loyalkit.callbacks import MagnitudePruningCallback
from loyalkit.compression import CubicSchedule, OneShotSchedule, prunable_weights

# Cubic schedule of the runs below, by hand: s(t) = 0.5 - 0.5 * (1 - (t_k - 1) / 4) ** 3 with
# t_k = 1 + 2 * floor((t - 1) / 2): 0 for t <= 2, 0.5 - 0.5 * 0.5**3 = 0.4375 for t in {3, 4},
# 0.5 from t = 5 on.
SCHEDULE = CubicSchedule(target_sparsity=0.5, start_step=1, end_step=5, frequency=2)
BY_HAND = {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.4375, 4: 0.4375, 5: 0.5, 6: 0.5}


def zero_counts(model: torch.nn.Module) -> dict[str, int]:
    """Zeros of each encoder Linear weight, counted in numpy on the state dict."""
    state = model.state_dict()
    return {name: int((state[name].numpy() == 0).sum()) for name in prunable_weights(model)}


def expected_zeros(model: torch.nn.Module, target: float) -> dict[str, int]:
    # Layer scope prunes round(target * numel) weights per tensor (Python rounding).
    return {name: round(target * w.numel()) for name, w in prunable_weights(model).items()}


class Probe(TrainingRecorder):
    """Records, after the pruning callback, zeros per step, the logs it sees and logits at saves."""

    def __init__(self, probe_inputs: dict[str, torch.Tensor]) -> None:
        super().__init__(probe_inputs)
        self.zeros: dict[int, dict[str, int]] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.zeros[state.global_step] = zero_counts(model)


def make_trainer(sentiment, args, callbacks) -> Trainer:
    return plain_trainer(sentiment, tiny_bert(num_layers=2, seed=0).train(), args, callbacks)


def test_masks_hold_through_training_checkpoints_and_logs(sentiment, tmp_path) -> None:
    pruning = MagnitudePruningCallback(SCHEDULE, scope="layer")
    probe = Probe(probe_batch(sentiment[0]))
    trainer = make_trainer(sentiment, checkpointed_training_args(tmp_path), [pruning, probe])
    trainer.train()
    model = trainer.model
    assert model is not None

    # After every optimizer step the pruned weights are zero: round(s(t) * numel) per tensor.
    assert sorted(probe.zeros) == [1, 2, 3, 4, 5, 6]
    for step, zeros in probe.zeros.items():
        assert zeros == expected_zeros(model, BY_HAND[step]), step
    # ... and training really moved the weights the mask keeps.
    initial = tiny_bert(num_layers=2, seed=0).state_dict()
    final = model.state_dict()
    for name, mask in pruning.masks.masks.items():
        assert not torch.equal(final[name][mask], initial[name][mask])
        assert bool((final[name][~mask] == 0).all())

    # Checkpoints: plain weights, the schedule's sparsity, the same predictions after reloading.
    for step in (3, 6):
        folder = tmp_path / f"checkpoint-{step}"
        keys = load_file(str(folder / "model.safetensors"))
        assert not any(key.endswith(("weight_orig", "weight_mask")) for key in keys)
        reloaded = BertForSequenceClassification.from_pretrained(folder).eval()
        assert zero_counts(reloaded) == expected_zeros(reloaded, BY_HAND[step])
        with torch.no_grad():
            logits = reloaded(**probe.probe_inputs).logits
        torch.testing.assert_close(logits, probe.saved[step])
        state = json.loads((folder / "trainer_state.json").read_text())
        saved_state = state["stateful_callbacks"]["MagnitudePruningCallback"]
        assert saved_state["args"]["schedule"]["kind"] == "cubic"

    # Logs: the schedule's value by hand and the share of zeros counted independently.
    total = sum(w.numel() for w in prunable_weights(model).values())
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in train_logs] == [1, 2, 3, 4, 5, 6]
    for entry in train_logs:
        logged_step = int(entry["step"])
        assert entry["pruning_schedule_sparsity"] == pytest.approx(BY_HAND[logged_step])
        assert entry["sparsity"] == pytest.approx(sum(probe.zeros[logged_step].values()) / total)
    # A callback listed after the pruning callback (an integration, a printer) sees the values too.
    seen = [logs for logs in probe.logs_seen if "loss" in logs]
    assert [logs["sparsity"] for logs in seen] == [entry["sparsity"] for entry in train_logs]


def test_one_shot_global_pruning_with_gradient_accumulation(sentiment, tmp_path) -> None:
    pruning = MagnitudePruningCallback(OneShotSchedule(target_sparsity=0.6), scope="global")
    probe = Probe(probe_batch(sentiment[0]))
    args = checkpointed_training_args(
        tmp_path,
        max_steps=3,
        gradient_accumulation_steps=2,
        per_device_train_batch_size=4,
        save_strategy="no",
    )
    trainer = make_trainer(sentiment, args, [pruning, probe])
    trainer.train()
    total = sum(w.numel() for w in prunable_weights(trainer.model).values())
    # One optimizer step per two batches: the probe sees steps 1..3, each at the full target.
    assert sorted(probe.zeros) == [1, 2, 3]
    for zeros in probe.zeros.values():
        assert sum(zeros.values()) == round(0.6 * total)
    # Global scope: one threshold, so tensors differ from each other (checked on the final model).
    shares = {
        name: count / prunable_weights(trainer.model)[name].numel()
        for name, count in probe.zeros[3].items()
    }
    assert len(set(shares.values())) > 1


def test_resume_gives_the_same_masks_and_weights(sentiment, tmp_path) -> None:
    full_pruning = MagnitudePruningCallback(SCHEDULE, scope="global")
    full = make_trainer(sentiment, checkpointed_training_args(tmp_path / "full"), [full_pruning])
    full.train()

    # A fresh run resumed from step 3, built with a different schedule on purpose: the
    # checkpoint's callback state must replace it.
    decoy = MagnitudePruningCallback(OneShotSchedule(target_sparsity=0.9), scope="layer")
    args = checkpointed_training_args(
        tmp_path / "full", restore_callback_states_from_checkpoint=True
    )
    resumed = make_trainer(sentiment, args, [decoy])
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3"))
    restored = [
        cb for cb in resumed.callback_handler.callbacks if isinstance(cb, MagnitudePruningCallback)
    ]
    assert len(restored) == 1 and restored[0] is not decoy
    assert restored[0].schedule == SCHEDULE and restored[0].scope == "global"

    assert full.model is not None and resumed.model is not None
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    for name in full_state:
        torch.testing.assert_close(resumed_state[name], full_state[name])
    full_masks, resumed_masks = full_pruning.masks.masks, restored[0].masks.masks
    assert set(full_masks) == set(resumed_masks)
    for name, mask in full_masks.items():
        assert torch.equal(mask, resumed_masks[name]), name
    total = sum(mask.numel() for mask in full_masks.values())
    zeros = sum(int((full_state[name] == 0).sum()) for name in full_masks)
    assert zeros == round(0.5 * total)
    np.testing.assert_array_equal(
        [e["sparsity"] for e in resumed.state.log_history if "loss" in e and e["step"] > 3],
        [e["sparsity"] for e in full.state.log_history if "loss" in e and e["step"] > 3],
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"schedule": 0.5}, TypeError, "schedule"),
        (
            {"schedule": {"kind": "cubic", "target_sparsity": 1.0, "start_step": 0, "end_step": 3}},
            ValueError,
            "target_sparsity",
        ),
        (
            {"schedule": {"kind": "cubic", "target_sparsity": 0.5, "start_step": 9, "end_step": 3}},
            ValueError,
            "end_step",
        ),
        ({"schedule": SCHEDULE, "scope": "rows"}, ValueError, "scope"),
        ({"schedule": SCHEDULE, "module_pattern": "("}, ValueError, "module_pattern"),
        ({"schedule": SCHEDULE, "module_pattern": 7}, TypeError, "module_pattern"),
    ],
)
def test_callback_errors_name_the_argument(kwargs, error, argument) -> None:
    with pytest.raises(error, match=argument):
        MagnitudePruningCallback(**kwargs)


def test_state_is_json_and_rebuilds_the_callback() -> None:
    callback = MagnitudePruningCallback(
        SCHEDULE, scope="global", module_pattern=r".*\.output\.dense"
    )
    callback.mask_sparsity = 0.4375
    state = json.loads(json.dumps(callback.state()))
    rebuilt = MagnitudePruningCallback.from_state(state)
    assert rebuilt.schedule == SCHEDULE
    assert (rebuilt.scope, rebuilt.module_pattern) == ("global", r".*\.output\.dense")
    assert rebuilt.mask_sparsity == 0.4375 and rebuilt.masks is None
