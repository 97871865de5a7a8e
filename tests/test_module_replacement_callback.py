"""ModuleReplacementCallback in real ``Trainer.train()`` runs of a few steps on a tiny 4-layer BERT."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from tiny_bert import tiny_bert
from trainer_helpers import (
    TrainingRecorder,
    checkpointed_training_args,
    plain_trainer,
    probe_batch,
)
from transformers import BertForSequenceClassification

from loyalkit.callbacks import ModuleReplacementCallback
from loyalkit.compression import (
    ConstantReplacementSchedule,
    LinearReplacementSchedule,
    export_successor,
    find_module_replacement,
    prepare_module_replacement,
)

# p at the step index t the Trainer is about to run (state.global_step before the step), by hand.
CONSTANT = ConstantReplacementSchedule(rate=0.5, replacing_steps=3)
CONSTANT_BY_HAND = [0.5, 0.5, 0.5, 1.0, 1.0, 1.0]
LINEAR = LinearReplacementSchedule(slope=0.2, intercept=0.3)
LINEAR_BY_HAND = [0.3, 0.5, 0.7, 0.9, 1.0, 1.0]  # min(1, 0.2 t + 0.3)


@pytest.fixture(scope="module")
def teacher() -> BertForSequenceClassification:
    return tiny_bert(num_layers=4, seed=0)


class Probe(TrainingRecorder):
    """The rate each step ran with, the logs seen after the callback, logits at saves."""

    def __init__(self, probe_inputs: dict[str, torch.Tensor]) -> None:
        super().__init__(probe_inputs)
        self.rates: list[float] = []

    def on_step_end(self, args, state, control, model=None, **kwargs):
        # After the step, whatever the callback order: a resume moves restored callbacks last.
        self.rates.append(find_module_replacement(model).replacement_rate)


def prepared(teacher: BertForSequenceClassification) -> BertForSequenceClassification:
    model = copy.deepcopy(teacher).train()
    prepare_module_replacement(model, num_successor_layers=2)
    return model


def test_training_replaces_modules_checkpoints_and_exports(sentiment, teacher, tmp_path) -> None:
    export_dir = tmp_path / "successor"
    replacement = ModuleReplacementCallback(CONSTANT, export_dir=str(export_dir))
    probe = Probe(probe_batch(sentiment[0]))
    model = prepared(teacher)
    initial_successors = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = plain_trainer(
        sentiment, model, checkpointed_training_args(tmp_path / "run"), [replacement, probe]
    )
    trainer.train()

    # The schedule drove p before each of the 6 optimizer steps.
    assert probe.rates == CONSTANT_BY_HAND
    train_logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [entry["step"] for entry in train_logs] == [1, 2, 3, 4, 5, 6]
    assert [entry["replacement_rate"] for entry in train_logs] == CONSTANT_BY_HAND
    seen = [logs["replacement_rate"] for logs in probe.logs_seen if "loss" in logs]
    assert seen == CONSTANT_BY_HAND

    # Frozen: embeddings, pooler, head and predecessor layers are bit-for-bit the teacher's.
    final = model.state_dict()
    teacher_state = teacher.state_dict()
    for name, tensor in final.items():
        if name.startswith("bert.encoder.layer.predecessor."):
            original = "bert.encoder.layer." + name[len("bert.encoder.layer.predecessor.") :]
            assert torch.equal(tensor, teacher_state[original]), name
        elif not name.startswith("bert.encoder.layer."):
            assert torch.equal(tensor, teacher_state[name]), name
    # Trained: every successor layer moved away from its copy of predecessor layers 0 and 1.
    for index in (0, 1):
        prefix = f"bert.encoder.layer.{index}."
        moved = [
            not torch.equal(final[k], initial_successors[k]) for k in final if k.startswith(prefix)
        ]
        assert sum(moved) > len(moved) // 2, index

    # Checkpoints load with from_pretrained as the 2-layer successor the Trainer evaluated.
    for step in (3, 6):
        folder = tmp_path / "run" / f"checkpoint-{step}"
        reloaded, info = BertForSequenceClassification.from_pretrained(
            folder, output_loading_info=True
        )
        assert not info["missing_keys"]
        assert reloaded.config.num_hidden_layers == 2
        with torch.no_grad():
            torch.testing.assert_close(
                reloaded.eval()(**probe.probe_inputs).logits, probe.saved[step]
            )
        state = json.loads((folder / "trainer_state.json").read_text())
        saved = state["stateful_callbacks"]["ModuleReplacementCallback"]
        assert saved["args"]["schedule"] == {"kind": "constant", "rate": 0.5, "replacing_steps": 3}
        # Saved after the step ran: the rate of the last step, at its step index.
        assert saved["attributes"] == {
            "replacement_rate": CONSTANT_BY_HAND[step - 1],
            "step": step - 1,
        }
    assert not torch.equal(probe.saved[3], probe.saved[6])

    # The export at train end is the successor path exactly.
    exported = BertForSequenceClassification.from_pretrained(export_dir).eval()
    assert exported.config.num_hidden_layers == 2
    model.eval()
    with torch.no_grad():
        expected = model(**probe.probe_inputs).logits
        assert torch.equal(exported(**probe.probe_inputs).logits, expected)
        assert torch.equal(export_successor(model)(**probe.probe_inputs).logits, expected)
    torch.testing.assert_close(expected, probe.saved[6])


def test_resume_restores_the_rate_and_matches_the_uninterrupted_run(sentiment, teacher, tmp_path):
    full_callback = ModuleReplacementCallback(LINEAR)
    full = plain_trainer(
        sentiment, prepared(teacher), checkpointed_training_args(tmp_path / "full"), [full_callback]
    )
    full.train()
    assert [e["replacement_rate"] for e in full.state.log_history if "loss" in e] == pytest.approx(
        LINEAR_BY_HAND
    )

    # A fresh run resumed from step 3, built with a different schedule on purpose: the
    # checkpoint's callback state must replace it.
    decoy = ModuleReplacementCallback(ConstantReplacementSchedule(rate=0.0), seed=123)
    probe = Probe(probe_batch(sentiment[0]))
    args = checkpointed_training_args(
        tmp_path / "full", restore_callback_states_from_checkpoint=True
    )
    resumed = plain_trainer(sentiment, prepared(teacher), args, [decoy, probe])
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-3"))
    restored = [
        cb for cb in resumed.callback_handler.callbacks if isinstance(cb, ModuleReplacementCallback)
    ]
    assert len(restored) == 1 and restored[0] is not decoy
    assert restored[0].schedule == LINEAR and restored[0].seed is None
    assert probe.rates == pytest.approx(LINEAR_BY_HAND[3:])

    # Same draws, same data order, same dropout: the same final weights as without interruption.
    assert full.model is not None and resumed.model is not None
    full_state, resumed_state = full.model.state_dict(), resumed.model.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for name in full_state:
        torch.testing.assert_close(resumed_state[name], full_state[name])
    assert [e["replacement_rate"] for e in resumed.state.log_history if "loss" in e][-3:] == [
        e["replacement_rate"] for e in full.state.log_history if "loss" in e
    ][-3:]


def test_restored_state_sets_the_rate_before_the_first_step(teacher, tmp_path) -> None:
    callback = ModuleReplacementCallback(LINEAR, seed=5, export_dir=str(tmp_path))
    callback.replacement_rate, callback.step = 0.7, 2
    restored = ModuleReplacementCallback.from_state(json.loads(json.dumps(callback.state())))
    assert restored.schedule == LINEAR and restored.seed == 5
    assert restored.export_dir == str(tmp_path)
    assert (restored.replacement_rate, restored.step) == (0.7, 2)


def test_callback_needs_a_prepared_model(sentiment, teacher, tmp_path) -> None:
    callback = ModuleReplacementCallback(CONSTANT)
    model = copy.deepcopy(teacher).train()
    trainer = plain_trainer(
        sentiment, model, checkpointed_training_args(tmp_path, max_steps=1), [callback]
    )
    with pytest.raises(ValueError, match="prepare_module_replacement"):
        trainer.train()


def test_optimizer_built_before_the_successor_is_rejected(sentiment, teacher, tmp_path) -> None:
    model = copy.deepcopy(teacher).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    prepare_module_replacement(model, num_successor_layers=2)
    callback = ModuleReplacementCallback(CONSTANT)
    trainer = plain_trainer(
        sentiment,
        model,
        checkpointed_training_args(tmp_path, max_steps=1),
        [callback],
        optimizers=(optimizer, None),
    )
    with pytest.raises(ValueError, match="optimizer does not hold the successor"):
        trainer.train()


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"schedule": 0.5}, TypeError, "schedule"),
        ({"schedule": {"kind": "cubic"}}, ValueError, "kind"),
        ({"schedule": {"kind": "linear", "slope": -1.0}}, ValueError, "slope"),
        ({"schedule": {"kind": "constant", "rate": 2.0}}, ValueError, "rate"),
        ({"schedule": CONSTANT, "seed": "0"}, TypeError, "seed"),
        ({"schedule": CONSTANT, "export_dir": 3}, TypeError, "export_dir"),
    ],
)
def test_callback_errors_name_the_argument(kwargs, error, argument) -> None:
    with pytest.raises(error, match=argument):
        ModuleReplacementCallback(**kwargs)
