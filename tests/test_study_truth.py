"""Issue 11, finding 7: the report, the model card and results.json say only true things, and the
same config, seeds and thread count give the same numbers."""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import torch
from study_helpers import tiny_study
from transformers import AutoTokenizer, BertModel

from loyalkit.study.config import StudyConfig
from loyalkit.study.model_card import build_model_card
from loyalkit.study.runner import run_study

MEASURED = ("accuracy", "label_loyalty", "probability_loyalty", "kl_divergence", "flips")


def config(root: Path, output: str) -> StudyConfig:
    data = tiny_study(root, seeds=[0], threads=1, output_dir=str(root / output))
    encoder = root / "encoder"
    if not encoder.exists():  # a bare encoder: the study draws a new classification head
        BertModel.from_pretrained(root / "teacher").save_pretrained(encoder)
        AutoTokenizer.from_pretrained(root / "teacher").save_pretrained(encoder)
    data["teacher"].update(model=str(encoder), fine_tune="auto", epochs=2, learning_rate=3e-3)
    data["teacher"]["min_margin_over_majority"] = None  # a 2-epoch tiny teacher: not the point
    return StudyConfig.from_dict(data)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("truth")
    return root, [run_study(config(root, name), progress=False) for name in ("a", "b")]


def test_no_attack_report_claims_no_attack(two_runs: tuple[Path, list[dict[str, Any]]]) -> None:
    root, _ = two_runs
    report = (root / "a" / "results.md").read_text(encoding="utf-8")
    assert "attacked examples" not in report and "attack recipe" not in report
    assert "no attack" in report


def test_model_card_names_the_train_and_validation_files(
    two_runs: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, (results, _) = two_runs
    text = str(build_model_card(results, "kd-logit", 0))
    assert "fine-tuned from a local model on **train.tsv**" in text  # the study fine-tuned it
    assert "on the validation set (dev.tsv, 24 examples)" in text
    assert "on **dev**" not in text


def test_results_record_the_environment(two_runs: tuple[Path, list[dict[str, Any]]]) -> None:
    _, (results, _) = two_runs
    environment = results["environment"]
    for name in ("torch", "transformers", "numpy", "evaluate", "datasets", "accelerate"):
        assert environment["versions"][name] == metadata.version(name)
    assert environment["torch_threads"] == 1
    assert len(environment["load_average"]) == 3
    assert all(value >= 0 for value in environment["load_average"])
    with open("/proc/cpuinfo", encoding="utf-8") as file:
        models = {line.split(":", 1)[1].strip() for line in file if line.startswith("model name")}
    assert environment["cpu_model"] in models
    assert environment["cpu_count"] == os.cpu_count()


def test_same_config_seed_and_threads_give_identical_numbers(
    two_runs: tuple[Path, list[dict[str, Any]]],
) -> None:
    _, (first, second) = two_runs
    # The teacher's new head is drawn from the teacher's seed, not from whatever state the random
    # generator was left in (the second study runs in the same process after the first).
    assert first["teacher"]["fine_tuned"] is second["teacher"]["fine_tuned"] is True
    assert first["teacher"]["accuracy"] == second["teacher"]["accuracy"]
    assert len(first["runs"]) == len(second["runs"]) == 2
    for a, b in zip(first["runs"], second["runs"], strict=True):
        assert a["status"] == b["status"] == "done"
        for key in MEASURED:
            assert a[key] == b[key], (a["method"], key)
