"""LoyaltyCallback in real Trainer runs on tiny BERTs, checked against scipy and scikit-learn."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import trainer_helpers
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from sklearn.metrics import accuracy_score
from tiny_bert import fit_full_batch, tiny_bert, tiny_sentiment_dataset, tiny_tokenizer
from torch import nn
from transformers import Trainer, TrainingArguments

from loyalkit.callbacks.loyalty import LoyaltyCallback


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tokenizer = tiny_tokenizer(tmp_path_factory.mktemp("tokenizer"))
    return {
        "tokenizer": tokenizer,
        "train": tiny_sentiment_dataset(tokenizer, n=48, seed=0),
        "eval": tiny_sentiment_dataset(tokenizer, n=20, seed=1),
    }


@pytest.fixture(scope="module")
def trained_teacher(data: dict[str, Any]) -> nn.Module:
    """A tiny BERT fitted to the sentiment task (about 95% on the eval set), so loyalty varies."""
    torch.set_num_threads(1)
    batch = padded(data["tokenizer"], data["train"])
    return fit_full_batch(tiny_bert(seed=1), batch, data["train"]["labels"], 40)


@pytest.fixture
def teacher(trained_teacher: nn.Module) -> nn.Module:
    return copy.deepcopy(trained_teacher)


def padded(tokenizer: Any, dataset: Any) -> dict[str, torch.Tensor]:
    columns = ["input_ids", "token_type_ids", "attention_mask"]
    return tokenizer.pad([{k: row[k] for k in columns} for row in dataset], return_tensors="pt")


def training_args(output_dir: Path, **overrides: Any) -> TrainingArguments:
    """The shared short run, evaluated every two steps in batches of 8."""
    settings: dict[str, Any] = dict(
        per_device_eval_batch_size=8, eval_strategy="steps", eval_steps=2
    )
    settings.update(overrides)
    return trainer_helpers.training_args(output_dir, **settings)


def noisy_student(teacher: nn.Module, scale: float = 0.06) -> nn.Module:
    """The teacher with Gaussian noise on every weight: a student that agrees on most labels."""
    student = copy.deepcopy(teacher)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in student.parameters():
            param.add_(scale * torch.randn(param.shape, generator=generator))
    return student.train()


def make_trainer(
    data: dict[str, Any], args: TrainingArguments, model: nn.Module | None = None, **kwargs: Any
) -> Trainer:
    return Trainer(
        model=model if model is not None else tiny_bert(seed=0).train(),
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["eval"],
        processing_class=data["tokenizer"],
        **kwargs,
    )


def run_model(model: nn.Module, tokenizer: Any, dataset: Any) -> np.ndarray:
    """Logits over the whole set in one padded batch, independent of the Trainer's loop."""
    model.eval()
    with torch.no_grad():
        return model(**padded(tokenizer, dataset)).logits.numpy()


def independent_loyalty(student: np.ndarray, teacher: np.ndarray, labels: np.ndarray) -> dict:
    teacher_labels, student_labels = teacher.argmax(axis=1), student.argmax(axis=1)
    distance = jensenshannon(softmax(teacher, axis=1), softmax(student, axis=1), axis=1)
    teacher_right, student_right = teacher_labels == labels, student_labels == labels
    return {
        "label_loyalty": accuracy_score(teacher_labels, student_labels),
        "probability_loyalty": float(np.mean(1.0 - distance)),
        "flips": float(np.mean(teacher_right != student_right)),
        "teacher_accuracy": accuracy_score(labels, teacher_labels),
        "student_accuracy": accuracy_score(labels, student_labels),
    }


class ForwardCounter:
    def __init__(self, model: nn.Module) -> None:
        self.calls = 0
        model.register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: Any, outputs: Any) -> None:
        self.calls += 1


def test_values_match_scipy_and_sklearn_and_reach_the_logs(data, teacher, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    teacher_calls = ForwardCounter(teacher)
    student = noisy_student(teacher)
    trainer = make_trainer(data, training_args(tmp_path, learning_rate=1e-5), student)
    callback = LoyaltyCallback(teacher).attach(trainer)
    trainer.train()
    metrics = trainer.evaluate()
    # Evaluations at steps 2 and 4 and the final one; the teacher ran once, 3 batches of <= 8.
    logged = [log for log in trainer.state.log_history if "eval_label_loyalty" in log]
    assert [log["step"] for log in logged] == [2, 4, 4]
    assert callback.teacher_passes == 1 and teacher_calls.calls == 3

    student = run_model(trainer.model, data["tokenizer"], data["eval"])
    teacher_logits = run_model(teacher, data["tokenizer"], data["eval"])
    expected = independent_loyalty(student, teacher_logits, np.array(data["eval"]["labels"]))
    assert 0 < expected["label_loyalty"] < 1 and 0 < expected["flips"] < 1  # not degenerate
    for name, value in expected.items():
        assert metrics[f"eval_{name}"] == pytest.approx(value, abs=1e-6), name
        assert logged[-1][f"eval_{name}"] == pytest.approx(value, abs=1e-6), name
    assert logged[1]["eval_label_loyalty"] == pytest.approx(expected["label_loyalty"])
    assert {"eval_kl_divergence", "eval_worst_class_label_loyalty"} <= set(metrics)


def test_no_extra_student_forward_pass(data, teacher, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    plain = make_trainer(data, training_args(tmp_path), compute_metrics=lambda p: {})
    plain_calls = ForwardCounter(plain.model)
    plain.evaluate()
    trainer = make_trainer(data, training_args(tmp_path))
    student_calls = ForwardCounter(trainer.model)
    LoyaltyCallback(teacher).attach(trainer)
    trainer.evaluate()
    trainer.evaluate()
    assert plain_calls.calls == 3 and student_calls.calls == 2 * 3


def test_user_metrics_are_kept(data, teacher, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    def accuracy(prediction: Any) -> dict[str, float]:
        return {
            "accuracy": float((prediction.predictions.argmax(1) == prediction.label_ids).mean())
        }

    trainer = make_trainer(data, training_args(tmp_path), compute_metrics=accuracy)
    LoyaltyCallback(teacher).attach(trainer)
    metrics = trainer.evaluate()
    assert metrics["eval_accuracy"] == pytest.approx(metrics["eval_student_accuracy"])


def test_best_model_by_label_loyalty(data, teacher, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    args = training_args(
        tmp_path,
        max_steps=6,
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        learning_rate=2e-3,
        load_best_model_at_end=True,
        metric_for_best_model="label_loyalty",
    )
    trainer = make_trainer(data, args, noisy_student(teacher))
    LoyaltyCallback(teacher).attach(trainer)
    trainer.train()
    history = [log for log in trainer.state.log_history if "eval_label_loyalty" in log]
    values = [log["eval_label_loyalty"] for log in history]
    assert len(set(values)) > 1  # the test can tell the best checkpoint from the others
    best_step = history[int(np.argmax(values))]["step"]  # the first maximum wins
    assert trainer.state.best_metric == pytest.approx(max(values))
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    assert trainer.evaluate()["eval_label_loyalty"] == pytest.approx(max(values))


def test_teacher_with_another_label_count_is_refused(data, teacher, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    trainer = make_trainer(data, training_args(tmp_path))
    with pytest.raises(ValueError, match="`teacher` predicts 3 labels"):
        LoyaltyCallback(tiny_bert(num_labels=3, seed=1)).attach(trainer)

    class NoConfig(nn.Module):  # a teacher whose label count is seen only in its logits
        def __init__(self) -> None:
            super().__init__()
            self.inner = tiny_bert(num_labels=3, seed=1)

        def forward(self, **inputs: Any) -> Any:
            return self.inner(**inputs)

    trainer = make_trainer(data, training_args(tmp_path))
    LoyaltyCallback(NoConfig()).attach(trainer)
    with pytest.raises(ValueError, match="`teacher` predicts 3 labels"):
        trainer.evaluate()


class ListDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """A plain map-style dataset that can be changed in place between evaluations."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]


def test_changed_eval_set_is_detected(data, teacher, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    rows = ListDataset([dict(row) for row in data["eval"]])
    trainer = make_trainer(data, training_args(tmp_path))
    trainer.eval_dataset = rows
    LoyaltyCallback(teacher).attach(trainer)
    trainer.evaluate()
    rows.rows.reverse()
    with pytest.raises(ValueError, match="changed order"):
        trainer.evaluate()
    rows.rows.reverse()
    trainer.evaluate()  # back to the original: accepted
    del rows.rows[-3:]
    with pytest.raises(ValueError, match="changed size"):
        trainer.evaluate()


def test_a_new_eval_set_gets_its_own_teacher_logits(data, teacher, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    trainer = make_trainer(data, training_args(tmp_path))
    callback = LoyaltyCallback(teacher).attach(trainer)
    trainer.evaluate()
    shuffled = data["eval"].shuffle(seed=3)
    metrics = trainer.evaluate(eval_dataset=shuffled)
    trainer.evaluate(eval_dataset=shuffled)
    assert callback.teacher_passes == 2
    student = run_model(trainer.model, data["tokenizer"], shuffled)
    expected = independent_loyalty(
        student, run_model(teacher, data["tokenizer"], shuffled), np.array(shuffled["labels"])
    )
    assert metrics["eval_probability_loyalty"] == pytest.approx(expected["probability_loyalty"])


def test_misuse_is_refused(data, teacher, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match="`teacher`"):
        LoyaltyCallback("bert-base")  # type: ignore[arg-type]
    trainer = make_trainer(data, training_args(tmp_path))
    with pytest.raises(TypeError, match="`trainer`"):
        LoyaltyCallback(teacher).attach("trainer")  # type: ignore[arg-type]
    callback = LoyaltyCallback(teacher).attach(trainer)
    with pytest.raises(ValueError, match="already attached"):
        callback.attach(trainer)
    import transformers

    grouping = (
        {"train_sampling_strategy": "group_by_length"}
        if int(transformers.__version__.split(".")[0]) >= 5
        else {"group_by_length": True}
    )
    grouped = make_trainer(data, training_args(tmp_path, **grouping))
    with pytest.raises(ValueError, match="fixed order.*group_by_length"):
        LoyaltyCallback(teacher).attach(grouped)
    batched = make_trainer(data, training_args(tmp_path, batch_eval_metrics=True))
    with pytest.raises(ValueError, match="batch_eval_metrics"):
        LoyaltyCallback(teacher).attach(batched)
    unlabeled = make_trainer(data, training_args(tmp_path))
    unlabeled.eval_dataset = data["eval"].remove_columns("labels")
    LoyaltyCallback(teacher).attach(unlabeled)
    with pytest.raises(ValueError, match="has labels"):
        unlabeled.evaluate()


def test_listed_but_never_attached_fails_early_with_the_reason(
    data, teacher, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    callback = LoyaltyCallback(teacher)
    trainer = make_trainer(data, training_args(tmp_path), callbacks=[callback])
    student_calls = ForwardCounter(trainer.model)
    with pytest.raises(ValueError, match=r"never attached.*\.attach\(trainer\)"):
        trainer.train()  # at train begin: not one training step, not one evaluation
    assert student_calls.calls == 0
    with pytest.raises(ValueError, match="never attached"):
        trainer.evaluate()  # without training: at the first evaluation batch
    assert student_calls.calls == 1


def test_listed_then_attached_is_registered_once(data, teacher, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    student = noisy_student(teacher)
    callback = LoyaltyCallback(teacher)
    trainer = make_trainer(data, training_args(tmp_path), student, callbacks=[callback])
    assert callback.attach(trainer) is callback
    assert [cb for cb in trainer.callback_handler.callbacks if cb is callback] == [callback]
    metrics = trainer.evaluate()
    expected = independent_loyalty(
        run_model(student, data["tokenizer"], data["eval"]),
        run_model(teacher, data["tokenizer"], data["eval"]),
        np.array(data["eval"]["labels"]),
    )
    for name, value in expected.items():
        assert metrics[f"eval_{name}"] == pytest.approx(value, abs=1e-6), name


def test_a_lost_compute_metrics_is_named(data, teacher, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    replaced = make_trainer(data, training_args(tmp_path))
    LoyaltyCallback(teacher).attach(replaced)
    replaced.compute_metrics = lambda prediction: {}
    with pytest.raises(ValueError, match="compute_metrics` was replaced after `attach"):
        replaced.evaluate()
    loss_only = make_trainer(data, training_args(tmp_path))
    LoyaltyCallback(teacher).attach(loss_only)
    loss_only.args.prediction_loss_only = True
    with pytest.raises(ValueError, match="prediction_loss_only=True"):
        loss_only.evaluate()
