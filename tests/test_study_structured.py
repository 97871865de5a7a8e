"""The study's structured-pruning methods on the tiny teacher: ``ffn-pruning`` (half of every
layer's feed-forward neurons, KD fine-tuning) and ``layer-dropping`` (half the layers, KD).

References: the saved students reloaded with a plain ``from_pretrained``, their parameters counted
by hand from the config (``test_study_runner.bert_parameters``), loyalty recomputed with sklearn.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from sklearn.metrics import accuracy_score
from study_helpers import read_split, saved_model_logits, tiny_study
from test_study_runner import bert_parameters
from transformers import AutoModelForSequenceClassification

from loyalkit.study.config import StudyConfig, preset
from loyalkit.study.runner import run_study


def test_ffn_pruning_and_layer_dropping_build_smaller_students(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    short = {"epochs": 1, "batch_size": 16}
    methods = {
        "ffn-pruning": {**short, "share": 0.5, "num_batches": 1, "learning_rate": 1e-3},
        "layer-dropping": {**short, "student_layers": 1, "learning_rate": 1e-3},
    }
    results = run_study(
        StudyConfig.from_dict(tiny_study(tmp_path, methods=methods, seeds=[0])), progress=False
    )
    runs = {run["method"]: run for run in results["runs"]}
    assert {m: r["status"] for m, r in runs.items()} == {
        "ffn-pruning": "done",
        "layer-dropping": "done",
    }, [r.get("error") for r in runs.values()]
    assert runs["ffn-pruning"]["title"] == "FFN-50%+KD"
    assert runs["layer-dropping"]["title"] == "LD-alt-L1+KD"
    texts, _ = read_split(tmp_path / "dev.tsv")
    study = tmp_path / "study"
    teacher = saved_model_logits(study / "teacher", texts).argmax(1).numpy()
    for method, (size, layers) in {"ffn-pruning": (32, 2), "layer-dropping": (64, 1)}.items():
        run = runs[method]
        model = AutoModelForSequenceClassification.from_pretrained(study / run["model_dir"])
        assert (model.config.intermediate_size, model.config.num_hidden_layers) == (size, layers)
        assert run["parameters"] == bert_parameters(model.config)
        assert run["layers"] == layers
        student = saved_model_logits(study / run["model_dir"], texts).argmax(1).numpy()
        assert run["label_loyalty"] == pytest.approx(accuracy_score(teacher, student))


def test_the_quick_preset_includes_the_structured_methods() -> None:
    methods = [run.method for run in preset("quick").runs()]
    assert "ffn-pruning" in methods and "layer-dropping" in methods
    assert methods[-1] == "combined"


def test_their_settings_are_checked_where_they_are_declared() -> None:
    with pytest.raises(
        ValueError, match=r"methods.ffn-pruning.importance: expected a name; FfnPruningConfig"
    ):
        StudyConfig.from_dict({"methods": {"ffn-pruning": {"importance": "random"}}})
    with pytest.raises(
        ValueError, match=r"methods.ffn-pruning.share: expected a number in \(0, 0.95\]"
    ):
        StudyConfig.from_dict({"methods": {"ffn-pruning": {"share": 0}}})
    with pytest.raises(
        ValueError, match=r"methods.layer-dropping.strategy: expected a name; LayerDroppingConfig"
    ):
        StudyConfig.from_dict({"methods": {"layer-dropping": {"strategy": "bottom"}}})
