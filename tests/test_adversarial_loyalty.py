"""Adversarial loyalty checked by hand on constructed targets."""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import pytest
import torch
from attack_helpers import classifier_setup, raw_dataset
from torch import nn

from loyalkit.robustness.adversarial_transfer import ADVERSARIAL_LOYALTY_KEYS, adversarial_loyalty
from loyalkit.robustness.attack_runner import AttackConfig, AttackReport, attack_model


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    loaded = classifier_setup(tmp_path_factory)
    config = AttackConfig(
        recipe="deepwordbug", num_examples=24, seed=0, resources=loaded["resources"]
    )
    data = raw_dataset(60, seed=1)
    return {**loaded, "report": attack_model(loaded["model"], loaded["tokenizer"], data, config)}


class Constant(nn.Module):
    """Predicts class ``label`` for every input."""

    def __init__(self, label: int, num_labels: int = 2) -> None:
        super().__init__()
        self.label, self.num_labels = label, num_labels
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the model a device

    def forward(self, input_ids: torch.Tensor, **inputs: Any) -> Any:
        logits = torch.zeros(len(input_ids), self.num_labels)
        logits[:, self.label] = 1.0
        return type("Output", (), {"logits": logits})()


def successes(report: AttackReport) -> list[dict[str, Any]]:
    return [e for e in report.examples if e["status"] == "succeeded"]


def test_the_source_itself_keeps_all_its_adversarial_labels(setup: dict[str, Any]) -> None:
    report = setup["report"]
    n = len(successes(report))
    assert n >= 3
    values = adversarial_loyalty(report, copy.deepcopy(setup["model"]).train(), setup["tokenizer"])
    assert set(values) == set(ADVERSARIAL_LOYALTY_KEYS)
    # Each success flipped the source away from the gold label: it transfers to itself.
    assert values == {
        "num_adversarial": float(n),
        "adversarial_label_loyalty": 1.0,
        "original_label_loyalty": 1.0,
        "transfer_rate": 1.0,
    }


def test_a_constant_model_by_hand(setup: dict[str, Any]) -> None:
    report = setup["report"]
    rows = successes(report)
    for label in (0, 1):
        values = adversarial_loyalty(report, Constant(label), setup["tokenizer"], batch_size=2)
        adversarial = np.mean([e["perturbed_label"] == label for e in rows])
        original = np.mean([e["original_label"] == label for e in rows])
        transfer = np.mean([e["ground_truth"] != label for e in rows])
        assert 0 < adversarial < 1  # both labels occur among the successes
        assert values["adversarial_label_loyalty"] == pytest.approx(adversarial)
        assert values["original_label_loyalty"] == pytest.approx(original)
        assert values["transfer_rate"] == pytest.approx(transfer)


@pytest.mark.attack  # TextAttack's own wrapper, in this process
def test_a_noisy_student_against_textattacks_wrapper(setup: dict[str, Any]) -> None:
    """The target's labels computed through TextAttack's own HuggingFaceModelWrapper."""
    from textattack.models.wrappers import HuggingFaceModelWrapper

    student = copy.deepcopy(setup["model"])
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in student.parameters():
            param.add_(0.15 * torch.randn(param.shape, generator=generator))
    rows = successes(setup["report"])
    reference = HuggingFaceModelWrapper(student.eval(), setup["tokenizer"])
    on_adversarial = reference([e["perturbed_text"] for e in rows]).argmax(1).numpy()
    on_original = reference([e["original_text"] for e in rows]).argmax(1).numpy()
    values = adversarial_loyalty(setup["report"], student, setup["tokenizer"])
    adversarial = np.mean(on_adversarial == [e["perturbed_label"] for e in rows])
    assert 0 < adversarial < 1  # the noisy student keeps some of the labels, not all
    assert values["adversarial_label_loyalty"] == pytest.approx(adversarial)
    assert values["original_label_loyalty"] == pytest.approx(
        np.mean(on_original == [e["original_label"] for e in rows])
    )
    assert values["transfer_rate"] == pytest.approx(
        np.mean(on_adversarial != [e["ground_truth"] for e in rows])
    )


def test_no_successful_attack_gives_nan(setup: dict[str, Any]) -> None:
    report = setup["report"]
    failed_only = AttackReport(
        summary=report.summary,
        examples=[e for e in report.examples if e["status"] != "succeeded"],
    )
    values = adversarial_loyalty(failed_only, setup["model"], setup["tokenizer"])
    assert values["num_adversarial"] == 0.0
    assert all(math.isnan(values[k]) for k in ADVERSARIAL_LOYALTY_KEYS[1:])


def test_bad_arguments(setup: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="`report`"):
        adversarial_loyalty({}, setup["model"], setup["tokenizer"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`target_model`"):
        adversarial_loyalty(setup["report"], "bert", setup["tokenizer"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="`batch_size`"):
        adversarial_loyalty(setup["report"], setup["model"], setup["tokenizer"], batch_size=0)
