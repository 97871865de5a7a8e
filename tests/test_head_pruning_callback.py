"""HeadPruningCallback in a plain Trainer: schedule, training after pruning, checkpoints, resume.

References: the heads' output-projection columns read directly from the weights after every
optimizer step, a copy of the masked model taken by a probe callback (removal must not change its
predictions), a plain ``from_pretrained`` of a mid-run checkpoint, and an uninterrupted run for
the resumed one.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from tiny_bert import tiny_bert, tiny_sentiment_dataset, tiny_tokenizer
from transformers import (
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from loyalkit.callbacks import HeadPruningCallback, HeadPruningConfig
from loyalkit.compression import load_head_pruned, remaining_heads

HEAD_SIZE, HEADS, LAYERS = 8, 4, 2


class Probe(TrainerCallback):
    """Records, after every optimizer step (after the pruning callback), what the model holds."""

    def __init__(self, pruning: HeadPruningCallback) -> None:
        self.pruning = pruning
        self.masked: dict[int, dict[int, list[int]]] = {}
        self.silent_columns_ok: dict[int, bool] = {}
        self.models: dict[int, torch.nn.Module] = {}

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs["model"]
        masked = {int(k): list(v) for k, v in self.pruning.masked_heads.items()}
        self.masked[state.global_step] = masked
        ok = True
        for layer, heads in masked.items():
            dense = model.bert.encoder.layer[layer].attention.output.dense.weight
            for head in heads:  # no physical removal yet: original positions
                ok &= not dense[:, head * HEAD_SIZE : (head + 1) * HEAD_SIZE].any()
        self.silent_columns_ok[state.global_step] = bool(ok)
        self.models[state.global_step] = copy.deepcopy(model).eval()


def train(tmp_path, callbacks, max_steps=6, resume=None, **extra):  # type: ignore[no-untyped-def]
    tmp_path.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(tmp_path)
    model = tiny_bert(num_layers=LAYERS, seed=0, vocab_size=len(tokenizer))
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=max_steps,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        save_strategy="steps",
        save_steps=3,
        logging_steps=100,
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
        restore_callback_states_from_checkpoint=True,
        **extra,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=tiny_sentiment_dataset(tokenizer, n=64),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer, tokenizer


def encoded(tokenizer) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    batch = tokenizer(
        ["the movie was good", "a dull boring story ."], padding=True, return_tensors="pt"
    )
    return dict(batch)


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(**batch).logits


def test_schedule_masks_then_removes_and_training_goes_on(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pruning = HeadPruningCallback(schedule={0: 0.25, 2: 0.5}, num_batches=2)
    probe = Probe(pruning)
    trainer, tokenizer = train(tmp_path, [pruning, probe])
    counts = {step: sum(len(h) for h in m.values()) for step, m in probe.masked.items()}
    assert counts == {1: 2, 2: 4, 3: 4, 4: 4, 5: 4, 6: 4}  # 25% of 8 heads, then 50%
    assert all(probe.silent_columns_ok.values())  # held at zero after every optimizer step
    for layer, heads in probe.masked[1].items():
        assert set(heads) <= set(probe.masked[6].get(layer, []))  # removed heads stay removed

    model = trainer.model
    final = probe.masked[6]
    assert remaining_heads(model) == [
        [h for h in range(HEADS) if h not in final.get(layer, [])] for layer in range(LAYERS)
    ]
    assert model.config.pruned_heads == final
    batch = encoded(tokenizer)
    # removal at train end does not change predictions
    assert torch.allclose(logits(model, batch), logits(probe.models[6], batch), atol=1e-6)

    # the remaining heads and the rest of the model kept training after the last pruning step
    def kept_columns(m: torch.nn.Module, layer: int) -> torch.Tensor:
        dense = m.bert.encoder.layer[layer].attention.output.dense.weight
        kept = [h for h in range(HEADS) if h not in final.get(layer, [])]
        return torch.cat([dense[:, h * HEAD_SIZE : (h + 1) * HEAD_SIZE] for h in kept], dim=1)

    for layer in range(LAYERS):
        assert not torch.allclose(
            kept_columns(probe.models[2], layer), kept_columns(probe.models[6], layer)
        )
        query = model.bert.encoder.layer[layer].attention.self.query.weight
        assert query.shape[0] == len(remaining_heads(model)[layer]) * HEAD_SIZE

    # the mid-run checkpoint (full size, silenced heads) reloads with plain from_pretrained
    checkpoint = BertForSequenceClassification.from_pretrained(tmp_path / "run" / "checkpoint-3")
    assert torch.equal(logits(checkpoint, batch), logits(probe.models[3], batch))
    # the final pruned model round-trips through save_pretrained
    trainer.save_model(str(tmp_path / "pruned"))
    reloaded = load_head_pruned(tmp_path / "pruned")
    assert torch.equal(logits(reloaded, batch), logits(model, batch))


def test_resume_restores_masks_and_weights(tmp_path) -> None:  # type: ignore[no-untyped-def]
    schedule = {1: 0.25, 4: 0.5}
    whole, tokenizer = train(
        tmp_path / "a", [HeadPruningCallback(schedule=schedule, num_batches=1)]
    )
    # a new Trainer, model and callback, resumed from the uninterrupted run's checkpoint. The
    # Trainer rebuilds the callback from the checkpoint's state (arguments and silenced heads),
    # so the different schedule given here must not matter: that shows the state was restored.
    resumed, _ = train(
        tmp_path / "b",
        [HeadPruningCallback(schedule={5: 0.5}, num_batches=1)],
        resume=str(tmp_path / "a" / "run" / "checkpoint-3"),
    )
    assert resumed.model.config.pruned_heads == whole.model.config.pruned_heads
    assert sum(len(h) for h in whole.model.config.pruned_heads.values()) == 4
    whole_state, resumed_state = whole.model.state_dict(), resumed.model.state_dict()
    assert whole_state.keys() == resumed_state.keys()
    for name, tensor in whole_state.items():
        assert torch.allclose(resumed_state[name], tensor, atol=1e-6), name


def test_magnitude_once_at_start_per_layer(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pruning = HeadPruningCallback(schedule={0: 0.5}, importance="magnitude", scope="layer")
    trainer, _ = train(tmp_path, [pruning], max_steps=2)
    assert [len(h) for h in remaining_heads(trainer.model)] == [2, 2]


def test_config_errors_are_named() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"schedule": {}}, "schedule"),
        ({"schedule": {0: 1.0}}, "schedule"),
        ({"schedule": {-1: 0.5}}, "schedule"),
        ({"schedule": {0: 0.5, 10: 0.25}}, "must not decrease"),
        ({"schedule": {0: 0.5}, "importance": "random"}, "importance"),
        ({"schedule": {0: 0.5}, "scope": "model"}, "scope"),
        ({"schedule": {0: 0.5}, "num_batches": 0}, "num_batches"),
        ({"schedule": {0: 0.5}, "min_heads_per_layer": 0}, "min_heads_per_layer"),
        ({"schedule": {0: 0.5}, "batch_size": 0}, "batch_size"),
    ]
    for arguments, message in cases:
        with pytest.raises(ValueError, match=message):
            HeadPruningConfig(**arguments)
        with pytest.raises(ValueError, match=message):
            HeadPruningCallback(**arguments)
    config = HeadPruningConfig(schedule={"10": 0.5, 0: 0.25})  # type: ignore[dict-item]
    assert config.steps == ((0, 0.25), (10, 0.5))
    assert HeadPruningConfig(**config.as_arguments()) == config  # survives the JSON state


def test_unreachable_share_fails_before_training(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # 2 layers x 4 heads, 3 must stay per layer: at most 2 of 8 heads (25%) can go
    pruning = HeadPruningCallback(schedule={0: 0.1, 50: 0.5}, min_heads_per_layer=3)
    with pytest.raises(ValueError, match="min_heads_per_layer=3"):
        train(tmp_path, [pruning], max_steps=60)
    assert pruning.applied_steps == []  # refused before any scoring or training step
