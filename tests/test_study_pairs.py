"""The study on a sentence-pair task: the MNLI pairs of TextFooler's attack sets (../shared/data).

A tiny 2-class teacher is fine-tuned by the study (``fine_tune: auto``) for MNLI's three labels;
the numbers are recomputed here from the reloaded models fed ``(premise, hypothesis)`` pairs.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import accuracy_score
from study_helpers import saved_model_logits, tiny_study
from transformers import AutoModelForSequenceClassification

from loyalkit.study.config import StudyConfig
from loyalkit.study.runner import run_study
from loyalkit.study.task_data import load_task

MNLI = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnli_textfooler"
LABELS = ("entailment", "neutral", "contradiction")


def pair_study(root: Path, **overrides: Any) -> dict[str, Any]:
    data = tiny_study(root, seeds=[0])
    data["task"] = {
        "train_file": str(MNLI / "mnli_mismatched_1000.tsv"),
        "validation_file": str(MNLI / "mnli_matched_1000.tsv"),
        "has_header": False,
        "columns": ["label", "premise", "hypothesis"],
        "text_columns": ["premise", "hypothesis"],
        "label_names": list(LABELS),
        "max_train_examples": 48,
        "max_validation_examples": 30,
    }
    data["teacher"].update(epochs=2, learning_rate=1e-3, batch_size=16)
    # A 2-epoch tiny teacher on 3 classes sits at the majority-class rate: this test is about
    # sentence pairs, not the teacher-quality stop (tests/test_study_hygiene.py).
    data["teacher"]["min_margin_over_majority"] = None
    data.update(overrides)
    return data


def logits_of(model_dir: Path, pairs: list[tuple[str, str]]) -> np.ndarray:
    premises, hypotheses = zip(*pairs, strict=True)
    return saved_model_logits(model_dir, list(premises), list(hypotheses)).numpy()


def mnli_rows() -> list[dict[str, str]]:
    """The validation file read with the csv module."""
    with (MNLI / "mnli_matched_1000.tsv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert len(rows) == 1000
    return [{"label": r[0], "premise": r[1], "hypothesis": r[2]} for r in rows]


def test_study_on_mnli_pairs(tmp_path: Path) -> None:
    results = run_study(StudyConfig.from_dict(pair_study(tmp_path)), progress=False)
    assert results["task"]["text_columns"] == ["premise", "hypothesis"]
    assert results["task"]["label_names"] == list(LABELS)
    assert results["teacher"]["fine_tuned"] is True
    study = tmp_path / "study"
    teacher = AutoModelForSequenceClassification.from_pretrained(study / "teacher")
    assert teacher.config.num_labels == 3
    assert [(r["method"], r["status"]) for r in results["runs"]] == [
        ("int8-ptq", "done"),
        ("kd-logit", "done"),
    ], [r["error"] for r in results["runs"]]

    # The validation sample the study drew (same loader, same seed), checked against the file.
    sample = json.loads((study / "results.json").read_text(encoding="utf-8"))["task"]
    assert sample["validation_size"] == 30
    task = load_task(StudyConfig.from_dict(pair_study(tmp_path)).task, seed=0)
    pairs = list(zip(task.validation["premise"], task.validation["hypothesis"], strict=True))
    gold = np.array(task.validation["label"])
    by_text = {(r["premise"], r["hypothesis"]): LABELS.index(r["label"]) for r in mnli_rows()}
    assert [by_text[p] for p in pairs] == gold.tolist()  # labels as in the file, by name

    teacher_labels = logits_of(study / "teacher", pairs).argmax(1)
    assert results["teacher"]["accuracy"] == pytest.approx(accuracy_score(gold, teacher_labels))
    for run in results["runs"]:
        labels = logits_of(study / run["model_dir"], pairs).argmax(1)
        assert run["accuracy"] == pytest.approx(accuracy_score(gold, labels))
        assert run["label_loyalty"] == pytest.approx(accuracy_score(teacher_labels, labels))


def test_attack_on_mnli_pairs_flips_the_saved_model(tmp_path: Path) -> None:
    data = pair_study(tmp_path, methods=["int8-ptq"])
    data["attack"] = {"enabled": True, "recipe": "deepwordbug", "num_examples": 6}
    # The tiny teacher barely learns 48 MNLI pairs (about chance); now that its head is drawn from
    # teacher.seed (issue 11) the outcome is fixed per seed: seed 3 gives a teacher that is right
    # on a pair DeepWordBug flips clearly enough to flip again on reload (seeds 0-2 did not).
    data["teacher"]["seed"] = 3
    results = run_study(StudyConfig.from_dict(data), progress=False)
    (run,) = results["runs"]
    assert run["status"] == "done", run["error"]
    report = json.loads((tmp_path / "study" / "teacher" / "attack.json").read_text("utf-8"))
    assert report["summary"]["num_attacked"] == 6
    fooled = [e for e in report["examples"] if e["status"] == "succeeded"]
    assert fooled, "DeepWordBug fooled no pair: the check below would be empty"
    for example in fooled:
        original = tuple(example["original_text"].split("\n"))
        perturbed = tuple(example["perturbed_text"].split("\n"))
        assert len(original) == len(perturbed) == 2
        (label,) = logits_of(tmp_path / "study" / "teacher", [perturbed]).argmax(1)
        (before,) = logits_of(tmp_path / "study" / "teacher", [original]).argmax(1)
        assert before == example["ground_truth"] and label != example["ground_truth"]
