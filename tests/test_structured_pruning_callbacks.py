"""FfnPruningCallback and LayerDroppingCallback in a real ``Trainer.train()`` with KD.

References: the output-projection columns read directly from the weights after every optimizer
step; a copy of the masked model taken by a probe callback after the last step (removal must not
change its predictions); gradient importance of the untrained copy on the first batches of an
unshuffled loader (what the callback must have scored); the optimizer's own parameter list; a
plain ``from_pretrained`` of the saved model.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_bert import tiny_bert
from trainer_helpers import plain_trainer, probe_batch, sentiment_data, training_args
from transformers import AutoModelForSequenceClassification, TrainerCallback, TrainerState

from loyalkit.callbacks import (
    DistillationCallback,
    FfnPruningCallback,
    FfnPruningConfig,
    LayerDroppingCallback,
    LayerDroppingConfig,
    ModuleReplacementCallback,
)
from loyalkit.callbacks.conflicts import register_callback
from loyalkit.compression import (
    ConstantReplacementSchedule,
    gradient_ffn_importance,
    select_ffn_neurons,
)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


class Probe(TrainerCallback):
    """After every optimizer step (listed after the pruning callback): are the columns zero?"""

    def __init__(self, pruning: FfnPruningCallback) -> None:
        self.pruning = pruning
        self.silent: dict[int, bool] = {}
        self.last: torch.nn.Module | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs["model"]
        masked = self.pruning.masked_neurons
        ok = len(masked) == 2 and all(
            not layer.output.dense.weight[:, neurons].any()
            for layer, neurons in zip(model.bert.encoder.layer, masked, strict=True)
        )
        self.silent[state.global_step] = ok
        self.last = copy.deepcopy(model).eval()


def test_ffn_pruning_with_kd_trains_silenced_and_removes_at_the_end(tmp_path: Path) -> None:
    data = sentiment_data(tmp_path)
    tokenizer, dataset = data
    teacher = tiny_bert(num_layers=2, seed=1, vocab_size=len(tokenizer))
    student = copy.deepcopy(teacher)
    start = copy.deepcopy(student)
    pruning = FfnPruningCallback(fraction=0.5, importance="gradient", num_batches=2, batch_size=8)
    probe = Probe(pruning)
    kd = DistillationCallback(teacher, temperature=2.0, alpha=0.5)
    trainer = plain_trainer(data, student, training_args(tmp_path / "run"), [pruning, probe, kd])
    trainer.train()

    # scored on the untrained copy with the first two unshuffled batches of 8
    columns = ["input_ids", "token_type_ids", "attention_mask", "labels"]
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    rows = [{c: dataset[i][c] for c in columns} for i in range(16)]
    batches = [collate(rows[:8]), collate(rows[8:])]
    expected = select_ffn_neurons(gradient_ffn_importance(start, batches), fraction=0.5)
    assert pruning.masked_neurons == expected
    assert probe.silent == {1: True, 2: True, 3: True, 4: True}

    model = trainer.model
    assert model.config.intermediate_size == 32
    assert model.bert.encoder.layer[1].intermediate.dense.weight.shape == (32, 32)
    batch = probe_batch(tokenizer)
    assert probe.last is not None
    torch.testing.assert_close(
        logits(model, batch), logits(probe.last, batch), atol=1e-5, rtol=1e-5
    )
    # the kept neurons trained (KD moved them away from the teacher's weights)
    kept = [n for n in range(64) if n not in expected[0]]
    assert not torch.allclose(
        model.bert.encoder.layer[0].output.dense.weight,
        teacher.bert.encoder.layer[0].output.dense.weight[:, kept],
    )
    trainer.save_model(str(tmp_path / "pruned"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "pruned")
    torch.testing.assert_close(logits(reloaded, batch), logits(model, batch), atol=0, rtol=0)


def test_ffn_pruning_at_a_later_step_with_magnitude_importance(tmp_path: Path) -> None:
    data = sentiment_data(tmp_path)
    model = tiny_bert(num_layers=2, seed=2, vocab_size=len(data[0]))
    pruning = FfnPruningCallback(count=10, step=2, importance="magnitude")
    probe = Probe(pruning)
    trainer = plain_trainer(data, model, training_args(tmp_path / "run"), [pruning, probe])
    trainer.train()
    assert probe.silent == {1: False, 2: True, 3: True, 4: True}  # nothing masked before step 2
    assert trainer.model.config.intermediate_size == 54


def test_ffn_pruning_after_the_last_step_is_refused_before_training(tmp_path: Path) -> None:
    data = sentiment_data(tmp_path)
    model = tiny_bert(num_layers=2, vocab_size=len(data[0]))
    pruning = FfnPruningCallback(fraction=0.5, step=9, importance="magnitude")
    trainer = plain_trainer(data, model, training_args(tmp_path / "run"), [pruning])
    with pytest.raises(
        ValueError,
        match=r"step: FfnPruningCallback prunes at step 9, after the last of this run's 4",
    ):
        trainer.train()


def test_layer_dropping_with_kd_trains_the_kept_layers_only(tmp_path: Path) -> None:
    data = sentiment_data(tmp_path)
    tokenizer, _ = data
    teacher = tiny_bert(num_layers=4, seed=1, vocab_size=len(tokenizer))
    student = copy.deepcopy(teacher)
    dropping = LayerDroppingCallback(count=2, strategy="alternate")  # keeps 0 and 2
    kd = DistillationCallback(teacher, temperature=2.0, alpha=0.5)
    trainer = plain_trainer(data, student, training_args(tmp_path / "run"), [dropping, kd])
    assert len(student.bert.encoder.layer) == 2  # dropped when the Trainer was built
    assert torch.equal(
        student.bert.encoder.layer[1].output.dense.weight,
        teacher.bert.encoder.layer[2].output.dense.weight,
    )
    trainer.train()
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in student.parameters() if p.requires_grad}
    assert not torch.equal(
        student.bert.encoder.layer[1].output.dense.weight,
        teacher.bert.encoder.layer[2].output.dense.weight,
    )
    trainer.save_model(str(tmp_path / "dropped"))
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "dropped")
    assert reloaded.config.num_hidden_layers == 2
    batch = probe_batch(tokenizer)
    torch.testing.assert_close(logits(reloaded, batch), logits(student, batch), atol=0, rtol=0)


def test_layer_dropping_added_after_the_trainer_was_built_still_drops(tmp_path: Path) -> None:
    data = sentiment_data(tmp_path)
    model = tiny_bert(num_layers=4, vocab_size=len(data[0]))
    trainer = plain_trainer(data, model, training_args(tmp_path / "run"), [])
    trainer.add_callback(LayerDroppingCallback([0, 3]))
    trainer.train()
    assert model.config.num_hidden_layers == 2 and len(model.bert.encoder.layer) == 2


def test_conflicts_are_found_before_training() -> None:
    state = TrainerState()
    register_callback(LayerDroppingCallback(count=1), state, model=None)
    with pytest.raises(ValueError, match=r"both replace the encoder's layer stack"):
        register_callback(
            ModuleReplacementCallback(ConstantReplacementSchedule(0.5, 2)), state, model=None
        )
    state = TrainerState()
    register_callback(FfnPruningCallback(fraction=0.5), state, model=None)
    with pytest.raises(ValueError, match=r"both would score and remove feed-forward neurons"):
        register_callback(FfnPruningCallback(count=2), state, model=None)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: FfnPruningConfig(), r"fraction, count: pass exactly one"),
        (lambda: FfnPruningConfig(fraction=0.0), r"fraction: expected a number in \(0, 1\)"),
        (lambda: FfnPruningConfig(count=0), r"count: expected an int in \[1"),
        (lambda: FfnPruningConfig(fraction=0.5, step=-1), r"step: expected an int >= 0"),
        (lambda: FfnPruningConfig(fraction=0.5, importance="random"), r"importance: expected"),
        (lambda: LayerDroppingConfig(), r"keep, count: pass exactly one"),
        (lambda: LayerDroppingConfig(keep=(0, 0)), r"keep: expected distinct layer indices"),
        (lambda: LayerDroppingConfig(count=0), r"count: expected an int >= 1"),
        (lambda: LayerDroppingConfig(count=1, strategy="random"), r"strategy: expected one of"),
    ],
)
def test_bad_settings_are_named(build: Any, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        build()
