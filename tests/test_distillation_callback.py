"""DistillationCallback inside an unchanged transformers.Trainer, on tiny local BERTs.

The reference for "the Trainer optimises the KD loss" is one plain SGD step computed by hand: the
KD loss written out with softmax/log (not kl_div), back-propagated on a copy of the student, and
``w - lr * grad`` compared with the Trainer's weights. Gradient accumulation is checked against
the same run without accumulation; loyalty with ``loyalkit.metrics``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_bert import tiny_bert, tiny_bert_config, tiny_sentiment_dataset, tiny_tokenizer
from torch import nn
from transformers import (
    BertForSequenceClassification,
    DataCollatorWithPadding,
    Trainer,
    TrainingArguments,
)

from loyalkit.callbacks.distillation import DistillationCallback
from loyalkit.metrics import kl_divergence, label_loyalty, probability_loyalty

LR = 0.5


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def trained_teacher(tokenizer, tmp_path_factory) -> BertForSequenceClassification:
    """A confident teacher: a tiny BERT fine-tuned on the learnable sentiment task."""
    torch.set_num_threads(1)
    teacher = tiny_bert(seed=1)
    args = TrainingArguments(
        str(tmp_path_factory.mktemp("teacher")),
        max_steps=60,
        per_device_train_batch_size=16,
        learning_rate=1e-2,
        **QUIET,
    )
    data = tiny_sentiment_dataset(tokenizer, 64, seed=0)
    Trainer(model=teacher, args=args, train_dataset=data, data_collator=collator(tokenizer)).train()
    return teacher.eval()


@pytest.fixture
def teacher(trained_teacher):
    return copy.deepcopy(trained_teacher)


QUIET = {
    "report_to": "none",
    "use_cpu": True,
    "disable_tqdm": True,
    "save_strategy": "no",
    "seed": 0,
}


def collator(tokenizer):
    return DataCollatorWithPadding(tokenizer)


def sgd_args(output: Path, **overrides) -> TrainingArguments:
    """Plain SGD at a constant rate, no clipping or decay: one step is ``w - lr * grad``."""
    settings = {
        "max_steps": 1,
        "per_device_train_batch_size": 8,
        "learning_rate": LR,
        "optim": "sgd",
        "lr_scheduler_type": "constant",
        "weight_decay": 0.0,
        "max_grad_norm": 0.0,
        "logging_steps": 1,
        **QUIET,
    }
    settings.update(overrides)
    return TrainingArguments(str(output), **settings)


def dropout_free_bert(num_layers: int = 2, seed: int = 2) -> BertForSequenceClassification:
    """tiny_bert without dropout, so train-mode forwards are deterministic.

    Built from the config: transformers 4.57's SDPA attention reads the dropout rate from the
    config at construction, not from the Dropout module.
    """
    config = tiny_bert_config(num_layers=num_layers)
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    torch.manual_seed(seed)
    return BertForSequenceClassification(config)


def student_model(num_layers: int = 2) -> BertForSequenceClassification:
    return dropout_free_bert(num_layers=num_layers, seed=2)


def full_batch(dataset, tokenizer) -> dict[str, torch.Tensor]:
    return collator(tokenizer)([dataset[i] for i in range(len(dataset))])


def reference_loss(student, teacher, inputs, temperature, alpha, layer_map=None):
    """The distillation objective written out by hand (softmax/log, masked squared error)."""
    model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
    with torch.no_grad():
        t = teacher(**model_inputs, output_hidden_states=True)
    s = student(**model_inputs, output_hidden_states=True)
    p_teacher = torch.softmax(t.logits.double() / temperature, dim=1)
    log_p_student = torch.log_softmax(s.logits.double() / temperature, dim=1)
    kd = temperature**2 * (p_teacher * (p_teacher.log() - log_p_student)).sum(dim=1)
    loss = alpha * kd
    if alpha < 1:
        log_p = torch.log_softmax(s.logits.double(), dim=1)
        ce = -log_p[torch.arange(len(inputs["labels"])), inputs["labels"]]
        loss = loss + (1 - alpha) * ce
    for student_layer, teacher_layer in (layer_map or {}).items():
        diff = s.hidden_states[student_layer].double() - t.hidden_states[teacher_layer].double()
        mask = inputs["attention_mask"].double()
        per_token = (diff**2).mean(dim=2)
        loss = loss + (per_token * mask).sum(dim=1) / mask.sum(dim=1)
    return loss.mean()


def expected_after_one_sgd_step(student, teacher, inputs, **loss_kwargs) -> dict[str, torch.Tensor]:
    reference = copy.deepcopy(student).train()
    loss = reference_loss(reference, teacher, inputs, **loss_kwargs)
    loss.backward()
    expected = {
        name: (p - LR * p.grad).detach() if p.grad is not None else p.detach()
        for name, p in reference.named_parameters()
    }
    expected["__loss__"] = loss.detach().float()
    return expected


def assert_weights_close(model, expected: dict[str, torch.Tensor], **tolerance) -> None:
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(parameter.detach(), expected[name], msg=name, **tolerance)


@pytest.mark.parametrize(
    "temperature, alpha, layer_map",
    [(2.0, 0.5, None), (1.0, 1.0, None), (3.0, 0.2, {1: 2})],
)
def test_trainer_optimises_the_distillation_loss(
    tokenizer, teacher, tmp_path, temperature, alpha, layer_map
):
    data = tiny_sentiment_dataset(tokenizer, 8, seed=3)
    student = student_model(num_layers=1 if layer_map else 2)
    expected = expected_after_one_sgd_step(
        student,
        teacher,
        full_batch(data, tokenizer),
        temperature=temperature,
        alpha=alpha,
        layer_map=layer_map,
    )
    callback = DistillationCallback(
        teacher, temperature=temperature, alpha=alpha, hidden_layer_map=layer_map
    )
    trainer = Trainer(
        model=student,
        args=sgd_args(tmp_path),
        train_dataset=data,
        data_collator=collator(tokenizer),
        callbacks=[callback],
    )
    trainer.train()
    logged = trainer.state.log_history[0]["loss"]
    assert logged == pytest.approx(float(expected.pop("__loss__")), rel=1e-4)
    assert_weights_close(student, expected, rtol=1e-4, atol=1e-6)


def test_pure_kl_distillation_raises_probability_loyalty(tokenizer, teacher, tmp_path):
    # No labels in the training data: only the teacher can move the student.
    train = tiny_sentiment_dataset(tokenizer, 64, seed=0).remove_columns("labels")
    held_out = full_batch(tiny_sentiment_dataset(tokenizer, 64, seed=1), tokenizer)
    held_out.pop("labels")
    student = tiny_bert(seed=2)

    def logits(model):
        model.eval()
        with torch.no_grad():
            return model(**held_out).logits.numpy()

    teacher_logits = logits(teacher)
    before = probability_loyalty(logits(student), teacher_logits)
    kl_before = kl_divergence(logits(student), teacher_logits)
    args = TrainingArguments(
        str(tmp_path),
        max_steps=40,
        per_device_train_batch_size=16,
        learning_rate=5e-3,
        lr_scheduler_type="constant",
        **QUIET,
    )
    Trainer(
        model=student,
        args=args,
        train_dataset=train,
        data_collator=collator(tokenizer),
        callbacks=[DistillationCallback(teacher, temperature=1.0, alpha=1.0)],
    ).train()
    after = probability_loyalty(logits(student), teacher_logits)
    kl_after = kl_divergence(logits(student), teacher_logits)
    assert after > max(0.9, before + 0.2), (before, after)
    assert kl_after < 0.1 * kl_before, (kl_before, kl_after)
    assert label_loyalty(logits(student), teacher_logits) >= 0.9


def test_teacher_is_frozen_in_eval_mode_and_hooks_are_removed(tokenizer, teacher, tmp_path):
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    teacher.train()  # the callback must switch it to eval mode
    modes = []
    teacher.register_forward_hook(lambda module, *_: modes.append(module.training))
    data = tiny_sentiment_dataset(tokenizer, 16, seed=3)
    student = student_model()
    trainer = Trainer(
        model=student,
        args=sgd_args(tmp_path, max_steps=2),
        train_dataset=data,
        data_collator=collator(tokenizer),
        callbacks=[DistillationCallback(teacher, alpha=0.5)],
    )
    trainer.train()
    assert modes == [False, False]
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    # After training the student's forward is its own again (plain cross-entropy).
    inputs = full_batch(data, tokenizer)
    student.train()
    own = nn.functional.cross_entropy(student(**inputs).logits, inputs["labels"])
    torch.testing.assert_close(student(**inputs).loss, own)


@pytest.mark.parametrize(
    "alpha, with_labels, layer_map",
    [(0.5, True, None), (1.0, False, None), (0.7, True, {1: 1, 2: 2})],
)
def test_gradient_accumulation_matches_the_full_batch(
    tokenizer, teacher, tmp_path, alpha, with_labels, layer_map
):
    data = tiny_sentiment_dataset(tokenizer, 16, seed=4)
    if not with_labels:
        data = data.remove_columns("labels")
    initial = student_model()
    results = []
    for batch_size, accumulation in ((8, 1), (4, 2)):
        student = copy.deepcopy(initial)
        Trainer(
            model=student,
            args=sgd_args(
                tmp_path / f"ga{accumulation}",
                max_steps=2,
                per_device_train_batch_size=batch_size,
                gradient_accumulation_steps=accumulation,
            ),
            train_dataset=data,
            data_collator=collator(tokenizer),
            callbacks=[
                DistillationCallback(
                    copy.deepcopy(teacher), alpha=alpha, hidden_layer_map=layer_map
                )
            ],
        ).train()
        start = dict(initial.named_parameters())
        results.append({k: (p - start[k]).detach() for k, p in student.named_parameters()})
    # Compare the updates, not the weights: an update off by the factor 2 must show.
    full, accumulated = results
    scale = max(update.abs().max().item() for update in full.values())
    assert scale > 1e-4
    for name in full:
        torch.testing.assert_close(
            accumulated[name], full[name], rtol=1e-3, atol=1e-3 * scale, msg=name
        )


def test_cached_teacher_logits_give_the_same_training(tokenizer, teacher, tmp_path):
    data = tiny_sentiment_dataset(tokenizer, 16, seed=5)
    initial = student_model()
    runs = []
    for cache in (False, True):
        calls: list[int] = []
        run_teacher = copy.deepcopy(teacher)
        run_teacher.register_forward_hook(lambda *_, calls=calls: calls.append(1))
        student = copy.deepcopy(initial)
        callback = DistillationCallback(run_teacher, alpha=0.5, cache_teacher_logits=cache)
        trainer = Trainer(
            model=student,
            args=sgd_args(tmp_path / str(cache), max_steps=6),  # 3 epochs of 2 batches
            train_dataset=data,
            data_collator=collator(tokenizer),
            callbacks=[callback],
        )
        trainer.train()
        losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
        runs.append((len(calls), losses, dict(student.named_parameters()), callback))
    (plain_calls, plain_losses, plain_weights, _), (cached_calls, cached_losses, cached, cb) = runs
    assert plain_calls == 6 and cached_calls == 2  # the teacher runs in the first epoch only
    assert len(cb.distiller.cache) == len(set(map(tuple, data["input_ids"])))
    assert cached_losses == pytest.approx(plain_losses, rel=1e-5)
    for name in plain_weights:
        torch.testing.assert_close(cached[name], plain_weights[name], rtol=1e-5, atol=1e-6)


def train_with(callback, tokenizer, tmp_path, student=None, data=None):
    trainer = Trainer(
        model=student if student is not None else student_model(),
        args=sgd_args(tmp_path),
        train_dataset=data if data is not None else tiny_sentiment_dataset(tokenizer, 8),
        data_collator=collator(tokenizer),
        callbacks=[callback],
    )
    return trainer.train()


def test_misuse_gives_clear_errors(tokenizer, teacher, tmp_path):
    with pytest.raises(ValueError, match="`teacher` has 3 labels but the student has 2"):
        train_with(DistillationCallback(tiny_bert(num_labels=3)), tokenizer, tmp_path)
    with pytest.raises(ValueError, match=r"`layer_map` names student layer 3.*range 0\.\.2"):
        train_with(DistillationCallback(teacher, hidden_layer_map={3: 1}), tokenizer, tmp_path)
    with pytest.raises(ValueError, match=r"`layer_map` names teacher layer 7.*range 0\.\.2"):
        train_with(DistillationCallback(teacher, hidden_layer_map={1: 7}), tokenizer, tmp_path)
    with pytest.raises(ValueError, match="`cache_teacher_logits=True` cannot be combined"):
        DistillationCallback(teacher, hidden_layer_map={1: 1}, cache_teacher_logits=True)
    with pytest.raises(ValueError, match="`alpha` must be in"):
        DistillationCallback(teacher, alpha=2.0)
    with pytest.raises(TypeError, match="`teacher` must be a torch.nn.Module"):
        DistillationCallback("teacher-path")  # type: ignore[arg-type]
    unlabelled = tiny_sentiment_dataset(tokenizer, 8).remove_columns("labels")
    with pytest.raises(ValueError, match="`labels` are needed when `alpha` < 1"):
        train_with(DistillationCallback(teacher, alpha=0.5), tokenizer, tmp_path, data=unlabelled)


def test_checkpoint_reloads_without_teacher_weights(tokenizer, teacher, tmp_path):
    student = student_model(num_layers=1)
    trainer = Trainer(
        model=student,
        args=sgd_args(tmp_path, max_steps=2, save_strategy="steps", save_steps=2),
        train_dataset=tiny_sentiment_dataset(tokenizer, 16, seed=6),
        data_collator=collator(tokenizer),
        callbacks=[DistillationCallback(teacher, alpha=0.5, hidden_layer_map={1: 2})],
    )
    trainer.train()
    checkpoint = tmp_path / "checkpoint-2"
    saved = load_file(str(checkpoint / "model.safetensors"))
    assert set(saved) == set(student.state_dict())
    assert not any("layer.1." in key for key in saved)  # the 2-layer teacher's second layer
    reloaded = BertForSequenceClassification.from_pretrained(checkpoint).eval()
    inputs = full_batch(tiny_sentiment_dataset(tokenizer, 16, seed=7), tokenizer)
    inputs.pop("labels")
    student.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**inputs).logits, student(**inputs).logits)
    assert reloaded.config.num_hidden_layers == 1
