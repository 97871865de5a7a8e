"""The three ``evaluate`` modules: loading, batching, combine, Trainer and Evaluator, distributed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import evaluate
import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from sklearn.metrics import accuracy_score

from loyalkit.metrics import module_path

REPO = Path(__file__).resolve().parents[1]


def logits(n: int, c: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=2.0, size=(n, c))


def scipy_probability_loyalty(student: np.ndarray, teacher: np.ndarray, base=None) -> float:
    return float(
        np.mean(1 - jensenshannon(softmax(teacher, 1), softmax(student, 1), axis=1, base=base))
    )


def sklearn_label_loyalty(student: np.ndarray, teacher: np.ndarray) -> float:
    return float(accuracy_score(teacher.argmax(1), student.argmax(1)))


@pytest.fixture(scope="module")
def modules() -> dict[str, evaluate.EvaluationModule]:
    return {
        name: evaluate.load(str(module_path(name)))
        for name in ("loyalty", "label_loyalty", "probability_loyalty")
    }


def test_load_relative_folder_from_repo_root(monkeypatch):
    monkeypatch.chdir(REPO)
    student, teacher = logits(40, 3, 0), logits(40, 3, 1)
    result = evaluate.load("metrics/loyalty").compute(predictions=student, references=teacher)
    assert result["label_loyalty"] == pytest.approx(sklearn_label_loyalty(student, teacher))
    assert result["probability_loyalty"] == pytest.approx(
        scipy_probability_loyalty(student, teacher)
    )


@pytest.mark.parametrize(("n", "c"), [(1, 2), (37, 2), (200, 3), (64, 7)])
def test_modules_match_scipy_and_sklearn(modules, n, c):
    student, teacher = logits(n, c, n), logits(n, c, n + 1)
    expected_label = sklearn_label_loyalty(student, teacher)
    expected_probability = scipy_probability_loyalty(student, teacher, base=2)
    label = modules["label_loyalty"].compute(predictions=student, references=teacher)
    probability = modules["probability_loyalty"].compute(
        predictions=student, references=teacher, base=2
    )
    combined = modules["loyalty"].compute(predictions=student, references=teacher, base=2)
    assert label["label_loyalty"] == pytest.approx(expected_label)
    assert probability["probability_loyalty"] == pytest.approx(expected_probability, rel=1e-12)
    assert combined["label_loyalty"] == pytest.approx(expected_label)
    assert combined["probability_loyalty"] == pytest.approx(expected_probability, rel=1e-12)


def test_labels_instead_of_scores(modules):
    student, teacher = [0, 2, 1, 1, 2], [0, 1, 1, 1, 2]
    assert modules["label_loyalty"].compute(predictions=student, references=teacher) == {
        "label_loyalty": 0.8
    }
    result = modules["loyalty"].compute(
        predictions=student, references=teacher, labels=[0, 1, 1, 0, 0]
    )
    assert result["label_loyalty"] == 0.8
    assert "probability_loyalty" not in result
    # teacher right on 0,1,2; student right on 0,2: example 1 flips correct -> incorrect.
    assert result["flips_correct_to_incorrect"] == pytest.approx(0.2)


def test_probabilities_are_validated_through_the_module(modules):
    with pytest.raises(ValueError, match="references.*sum to 1"):
        modules["probability_loyalty"].compute(
            predictions=[[0.5, 0.5]], references=[[0.7, 0.7]], input_type="probabilities"
        )
    with pytest.raises(ValueError, match="ragged"):
        modules["loyalty"].compute(predictions=[[0.5, 0.5], [0.2]], references=[[0.5, 0.5]] * 2)


def test_add_batch_equals_one_compute(modules):
    student, teacher = logits(250, 3, 7), logits(250, 3, 8)
    gold = np.random.default_rng(9).integers(0, 3, 250)
    module = modules["loyalty"]
    for start in range(0, 250, 64):
        module.add_batch(
            predictions=student[start : start + 64], references=teacher[start : start + 64]
        )
    batched = module.compute(labels=gold)
    assert batched["probability_loyalty"] == pytest.approx(
        scipy_probability_loyalty(student, teacher)
    )
    assert batched["flips"] == pytest.approx(
        np.mean((student.argmax(1) == gold) != (teacher.argmax(1) == gold))
    )


def test_evaluate_combine(monkeypatch):
    monkeypatch.chdir(REPO)
    student, teacher = logits(30, 2, 10), logits(30, 2, 11)
    combined = evaluate.combine(["metrics/label_loyalty", "metrics/probability_loyalty"])
    result = combined.compute(predictions=student, references=teacher, input_type="logits")
    assert result == pytest.approx(
        {
            "label_loyalty": sklearn_label_loyalty(student, teacher),
            "probability_loyalty": scipy_probability_loyalty(student, teacher),
        }
    )


def test_inside_trainer_compute_metrics(modules, tmp_path):
    from tiny_bert import tiny_bert, tiny_sentiment_dataset, tiny_tokenizer
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    torch.set_num_threads(1)
    tokenizer = tiny_tokenizer(tmp_path)
    dataset = tiny_sentiment_dataset(tokenizer, n=48, seed=1)
    teacher, student = tiny_bert(seed=1), tiny_bert(seed=2)
    batch = DataCollatorWithPadding(tokenizer)(
        [{k: v for k, v in row.items() if k != "labels"} for row in dataset]
    )
    with torch.no_grad():
        teacher_logits = teacher(**batch).logits.numpy()
        student_logits = student(**batch).logits.numpy()
    loyalty = modules["loyalty"]

    def compute_metrics(eval_prediction):
        return loyalty.compute(
            predictions=eval_prediction.predictions,
            references=teacher_logits,
            labels=eval_prediction.label_ids,
        )

    args = TrainingArguments(
        tmp_path / "out", per_device_eval_batch_size=16, report_to="none", use_cpu=True
    )
    trainer = Trainer(
        model=student,
        args=args,
        eval_dataset=dataset,
        compute_metrics=compute_metrics,
        data_collator=DataCollatorWithPadding(tokenizer),
    )
    metrics = trainer.evaluate()
    gold = np.array(dataset["labels"])
    assert metrics["eval_label_loyalty"] == pytest.approx(
        sklearn_label_loyalty(student_logits, teacher_logits)
    )
    assert metrics["eval_probability_loyalty"] == pytest.approx(
        scipy_probability_loyalty(student_logits, teacher_logits), rel=1e-5
    )
    assert metrics["eval_student_accuracy"] == pytest.approx(
        accuracy_score(gold, student_logits.argmax(1))
    )


def test_with_the_evaluate_evaluator(modules, tmp_path):
    from datasets import Dataset
    from tiny_bert import tiny_bert, tiny_sentiment_texts, tiny_tokenizer

    torch.set_num_threads(1)
    tokenizer = tiny_tokenizer(tmp_path)
    texts, _ = tiny_sentiment_texts(24, seed=3)
    teacher, student = tiny_bert(seed=3), tiny_bert(seed=4)
    with torch.no_grad():
        encoded = tokenizer(texts, padding=True, return_tensors="pt")
        teacher_labels = teacher(**encoded).logits.argmax(1).tolist()
        student_labels = student(**encoded).logits.argmax(1).tolist()
    data = Dataset.from_dict({"text": texts, "teacher_label": teacher_labels})
    result = evaluate.evaluator("text-classification").compute(
        model_or_pipeline=student,
        tokenizer=tokenizer,
        data=data,
        metric=modules["label_loyalty"],
        label_column="teacher_label",
        label_mapping=student.config.label2id,
    )
    assert result["label_loyalty"] == pytest.approx(accuracy_score(teacher_labels, student_labels))


DISTRIBUTED_WORKER = textwrap.dedent(
    """
    import json, sys
    import evaluate, numpy as np
    rank, cache, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    student = np.random.default_rng(0).normal(size=(90, 3))
    teacher = np.random.default_rng(1).normal(size=(90, 3))
    gold = np.random.default_rng(2).integers(0, 3, 90)
    module = evaluate.load(name, num_process=2, process_id=rank, cache_dir=cache,
                           experiment_id="loyalty-test")
    shard = slice(0, 50) if rank == 0 else slice(50, 90)  # uneven shards on purpose
    for start in range(shard.start, shard.stop, 16):
        stop = min(start + 16, shard.stop)
        module.add_batch(predictions=student[start:stop], references=teacher[start:stop])
    result = module.compute(labels=gold if rank == 0 else None)
    print(json.dumps(result))
    """
)


def test_distributed_two_processes(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(DISTRIBUTED_WORKER)
    name = str(module_path("loyalty"))
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), str(rank), str(tmp_path / "cache"), name],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [worker.communicate(timeout=120) for worker in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
    import json

    rank0 = json.loads(outputs[0][0].strip().splitlines()[-1])
    assert outputs[1][0].strip().splitlines()[-1] == "null"  # only rank 0 gets the result
    student = np.random.default_rng(0).normal(size=(90, 3))
    teacher = np.random.default_rng(1).normal(size=(90, 3))
    gold = np.random.default_rng(2).integers(0, 3, 90)
    assert rank0["num_examples"] == 90
    assert rank0["label_loyalty"] == pytest.approx(sklearn_label_loyalty(student, teacher))
    assert rank0["probability_loyalty"] == pytest.approx(
        scipy_probability_loyalty(student, teacher)
    )
    assert rank0["student_accuracy"] == pytest.approx(accuracy_score(gold, student.argmax(1)))


def test_batches_of_tensors_and_a_change_of_form(modules):
    student, teacher = torch.randn(30, 4), torch.randn(30, 4)
    module = modules["loyalty"]
    module.add_batch(predictions=student[:10], references=teacher[:10])
    module.add_batch(predictions=student[10:].numpy(), references=teacher[10:].numpy())
    result = module.compute()
    assert result["probability_loyalty"] == pytest.approx(
        scipy_probability_loyalty(student.double().numpy(), teacher.double().numpy())
    )
    module.add_batch(predictions=student[:10], references=teacher[:10])
    with pytest.raises(ValueError, match="one form across batches"):
        module.add_batch(predictions=student[:10].argmax(1), references=teacher[:10].argmax(1))
    module.compute()  # leaves the module clean for the next test


def test_length_mismatch_through_the_module(modules):
    with pytest.raises(ValueError, match="predictions.*references"):
        modules["label_loyalty"].compute(predictions=np.zeros((3, 2)), references=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="predictions.*references"):
        modules["label_loyalty"].compute(predictions=[0, 1, 1], references=[0, 1])


@pytest.mark.parametrize("name", ["label_loyalty", "loyalty"])
def test_fractional_labels_are_rejected_not_truncated(modules, name):
    for predictions in ([0.5, 1], np.array([0.5, 1.0])):
        with pytest.raises(ValueError, match="predictions.*integer class labels"):
            modules[name].compute(predictions=predictions, references=[0, 1])
    assert modules[name].compute(predictions=[1.0, 0.0], references=[1, 1])["label_loyalty"] == 0.5


def test_errors_in_array_batches_name_the_right_argument(modules):
    with pytest.raises(ValueError, match="`references`.*empty"):
        modules["loyalty"].add_batch(predictions=np.zeros((2, 2)), references=np.zeros((0, 2)))
