"""attack_model against TextAttack's own Attacker and metrics on the same examples."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from attack_helpers import classifier_setup, raw_dataset
from torch import nn
from transformers import BertForSequenceClassification

from loyalkit.robustness.attack_runner import (
    EXAMPLE_FIELDS,
    SUMMARY_KEYS,
    AttackConfig,
    attack_model,
    build_model_attack,
    run_attack,
    sample_rows,
)
from loyalkit.robustness.textattack_setup import import_textattack

pytestmark = pytest.mark.attack

NUM_EXAMPLES = 24
STATUS_OF = {
    "SuccessfulAttackResult": "succeeded",
    "FailedAttackResult": "failed",
    "SkippedAttackResult": "skipped",
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    loaded = classifier_setup(tmp_path_factory)
    return {
        **loaded,
        "textattack": import_textattack(loaded["resources"]),
        "data": raw_dataset(60, seed=1),
    }


def config(setup: dict[str, Any], **overrides: Any) -> AttackConfig:
    settings: dict[str, Any] = dict(
        recipe="deepwordbug", num_examples=NUM_EXAMPLES, seed=0, resources=setup["resources"]
    )
    settings.update(overrides)
    return AttackConfig(**settings)


def reference_attack(setup: dict[str, Any], seed: int, **attack_args: Any) -> list[Any]:
    """TextAttack's stock pipeline: its DeepWordBug recipe on HuggingFaceModelWrapper, run by
    Attacker over the rows numpy's default_rng(seed).permutation picks, in that order."""
    textattack = setup["textattack"]
    from textattack.attack_recipes import DeepWordBugGao2018

    order = np.random.default_rng(seed).permutation(len(setup["data"]))[:NUM_EXAMPLES]
    rows = [(setup["data"][int(i)]["sentence"], setup["data"][int(i)]["label"]) for i in order]
    wrapper = textattack.models.wrappers.HuggingFaceModelWrapper(setup["model"], setup["tokenizer"])
    attack = DeepWordBugGao2018.build(wrapper)
    args = textattack.AttackArgs(
        num_examples=len(rows), random_seed=seed, disable_stdout=True, silent=True, **attack_args
    )
    attacker = textattack.Attacker(attack, textattack.datasets.Dataset(rows), args)
    return attacker.attack_dataset()


def textattack_metrics(results: list[Any]) -> dict[str, float]:
    from textattack.metrics import AttackQueries, AttackSuccessRate, WordsPerturbed

    rate = AttackSuccessRate().calculate(results)
    words = WordsPerturbed().calculate(results)
    queries = AttackQueries().calculate(results)
    return {
        "num_succeeded": rate["successful_attacks"],
        "num_failed": rate["failed_attacks"],
        "num_skipped": rate["skipped_attacks"],
        # TextAttack reports percentages rounded to 2 decimals.
        "original_accuracy": rate["original_accuracy"] / 100,
        "after_attack_accuracy": rate["attack_accuracy_perc"] / 100,
        "attack_success_rate": rate["attack_success_rate"] / 100,
        "mean_words_perturbed": words["avg_word_perturbed_perc"] / 100,
        "mean_queries": queries["avg_num_queries"],
    }


def check_against_textattack(summary: dict[str, Any], results: list[Any]) -> None:
    expected = textattack_metrics(results)
    for key in ("num_succeeded", "num_failed", "num_skipped"):
        assert summary[key] == expected[key], key
    for key in ("original_accuracy", "after_attack_accuracy", "attack_success_rate"):
        assert summary[key] == pytest.approx(expected[key], abs=5.1e-5), key
    assert summary["mean_words_perturbed"] == pytest.approx(
        expected["mean_words_perturbed"], abs=5.1e-5
    )
    assert summary["mean_queries"] == pytest.approx(expected["mean_queries"], abs=5.1e-3)


def same_examples(report_examples: list[dict[str, Any]], results: list[Any]) -> None:
    assert len(report_examples) == len(results)
    for example, result in zip(report_examples, results, strict=True):
        assert example["perturbed_text"] == result.perturbed_result.attacked_text.text
        assert example["queries"] == result.num_queries
        assert example["status"] == STATUS_OF[type(result).__name__]


def test_summary_equals_textattacks_attacker_and_metrics(setup: dict[str, Any]) -> None:
    report = attack_model(setup["model"], setup["tokenizer"], setup["data"], config(setup))
    results = reference_attack(setup, seed=0)
    summary = report.summary
    assert set(summary) == set(SUMMARY_KEYS)
    # All outcomes occur: the comparison is not degenerate.
    assert min(summary["num_succeeded"], summary["num_failed"], summary["num_skipped"]) > 0
    check_against_textattack(summary, results)
    same_examples(report.examples, results)
    assert summary["num_attacked"] == summary["num_requested"] == NUM_EXAMPLES
    assert summary["num_errors"] == 0 and report.stop_reason is None
    # Summary by hand from the counts.
    attacked, failed = NUM_EXAMPLES, summary["num_failed"]
    assert summary["after_attack_accuracy"] == failed / attacked
    assert report.to_metrics()["attack_after_attack_accuracy"] == failed / attacked


def test_query_budget_matches_textattack_and_counts_as_failure(setup: dict[str, Any]) -> None:
    report = attack_model(
        setup["model"], setup["tokenizer"], setup["data"], config(setup, query_budget=6)
    )
    results = reference_attack(setup, seed=0, query_budget=6)
    check_against_textattack(report.summary, results)
    same_examples(report.examples, results)
    queries = [e["queries"] for e in report.examples]
    assert max(queries) == 6  # the budget was reached ...
    assert report.summary["num_attacked"] == NUM_EXAMPLES  # ... and every example attacked
    unbudgeted = attack_model(setup["model"], setup["tokenizer"], setup["data"], config(setup))
    assert unbudgeted.summary["mean_queries"] > report.summary["mean_queries"]


def test_same_seed_same_sample_and_numbers_other_seed_other_sample(setup: dict[str, Any]) -> None:
    first = attack_model(setup["model"], setup["tokenizer"], setup["data"], config(setup, seed=5))
    again = attack_model(setup["model"], setup["tokenizer"], setup["data"], config(setup, seed=5))
    other = attack_model(setup["model"], setup["tokenizer"], setup["data"], config(setup, seed=6))
    indices = [e["index"] for e in first.examples]
    assert indices == np.random.default_rng(5).permutation(60)[:NUM_EXAMPLES].tolist()
    assert first.summary == again.summary and first.examples == again.examples
    assert [e["index"] for e in other.examples] != indices
    # A smaller sample is a prefix of a larger one.
    rows = sample_rows(setup["data"], 5, 5)
    assert [r[0] for r in rows] == indices[:5]
    assert rows[0][1] == (setup["data"][indices[0]]["sentence"],)


def test_global_random_state_is_restored(setup: dict[str, Any]) -> None:
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    attack_model(setup["model"], setup["tokenizer"], setup["data"], config(setup, num_examples=3))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


class RaisesOnWord(nn.Module):
    """The classifier, except that any batch holding ``word``'s token raises."""

    def __init__(self, model: nn.Module, token_id: int) -> None:
        super().__init__()
        self.model, self.token_id = model, token_id

    def forward(self, input_ids: torch.Tensor, **inputs: Any) -> Any:
        if (input_ids == self.token_id).any():
            raise RuntimeError("poisoned input")
        return self.model(input_ids=input_ids, **inputs)


def test_an_example_that_raises_is_an_error_and_the_others_go_on(setup: dict[str, Any]) -> None:
    tokenizer = setup["tokenizer"]
    poisoned = RaisesOnWord(setup["model"], tokenizer.convert_tokens_to_ids("awful"))
    report = attack_model(poisoned, tokenizer, setup["data"], config(setup))
    clean = attack_model(setup["model"], tokenizer, setup["data"], config(setup))
    has_word = ["awful" in e["original_text"].split() for e in clean.examples]
    assert 0 < sum(has_word) < NUM_EXAMPLES
    errors = [e for e in report.examples if e["status"] == "error"]
    assert [e["index"] for e in errors] == [
        e["index"] for e, bad in zip(clean.examples, has_word, strict=True) if bad
    ]
    assert all("RuntimeError: poisoned input" in e["error"] for e in errors)
    assert report.summary["num_errors"] == sum(has_word)
    assert report.summary["num_attacked"] == NUM_EXAMPLES - sum(has_word)
    # The poisoned examples fail at their first query, before any random draw: the others get
    # exactly the outcomes of a clean run over the sample without them.
    cfg = config(setup)
    rows = [
        r for r in sample_rows(setup["data"], NUM_EXAMPLES, 0) if "awful" not in r[1][0].split()
    ]
    without = run_attack(build_model_attack(setup["model"], tokenizer, cfg), rows, cfg)
    assert [e for e in report.examples if e["status"] != "error"] == without.examples


def test_time_budget_stops_cleanly(setup: dict[str, Any]) -> None:
    """A clock that advances one second per forward pass: deterministic, no wall-clock limit."""
    model = BertForSequenceClassification.from_pretrained(setup["model"].name_or_path)
    passes = [0]
    model.register_forward_hook(lambda *_: passes.__setitem__(0, passes[0] + 1))
    budget = config(setup, time_budget_s=20.0)
    rows = sample_rows(setup["data"], NUM_EXAMPLES, 0)
    report = run_attack(
        build_model_attack(model, setup["tokenizer"], budget), rows, budget, clock=lambda: passes[0]
    )
    full = attack_model(setup["model"], setup["tokenizer"], setup["data"], config(setup))
    attacked = report.summary["num_attacked"]
    assert report.stop_reason == "time_budget"
    assert 0 < attacked < NUM_EXAMPLES and report.summary["num_requested"] == NUM_EXAMPLES
    assert report.examples == full.examples[:attacked]  # the example in progress is dropped
    assert passes[0] == 21  # the pass that found the budget spent raised instead of running
    nothing = attack_model(
        setup["model"], setup["tokenizer"], setup["data"], config(setup, time_budget_s=1e-9)
    )
    assert nothing.summary["num_attacked"] == 0 and nothing.stop_reason == "time_budget"


def test_save_csv_and_json_round_trip(setup: dict[str, Any], tmp_path: Path) -> None:
    report = attack_model(
        setup["model"], setup["tokenizer"], setup["data"], config(setup, num_examples=6)
    )
    with report.save(tmp_path / "out" / "examples.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [tuple(row) for row in rows] == [EXAMPLE_FIELDS] * 6
    for row, example in zip(rows, report.examples, strict=True):
        assert row["perturbed_text"] == example["perturbed_text"]
        assert row["status"] == example["status"] and int(row["queries"]) == example["queries"]
        assert int(row["index"]) == example["index"]
    document = json.loads(report.save(tmp_path / "examples.json").read_text(encoding="utf-8"))
    assert document["summary"] == report.summary
    assert document["examples"] == report.examples
    assert document["recipe"] == "deepwordbug" and document["text_columns"] == ["sentence"]
    with pytest.raises(ValueError, match="`path`"):
        report.save(tmp_path / "examples.txt")


def test_sentence_pairs(setup: dict[str, Any]) -> None:
    data = [
        {"premise": a, "hypothesis": b, "label": label}
        for a, b, label in zip(
            setup["data"]["sentence"][:8],
            setup["data"]["sentence"][8:16],
            setup["data"]["label"][:8],
            strict=True,
        )
    ]
    report = attack_model(
        setup["model"],
        setup["tokenizer"],
        data,
        config(setup, num_examples=8),
        text_columns=("premise", "hypothesis"),
    )
    assert report.summary["num_attacked"] == 8 and report.text_columns == ("premise", "hypothesis")
    for example in report.examples:
        premise, hypothesis = example["original_text"].split("\n")
        assert data[example["index"]]["premise"] == premise
        assert data[example["index"]]["hypothesis"] == hypothesis


def test_bad_input_is_refused(setup: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="`num_examples`"):
        AttackConfig(num_examples=0)
    with pytest.raises(ValueError, match="`query_budget`"):
        AttackConfig(query_budget=0)
    with pytest.raises(ValueError, match="`time_budget_s`"):
        AttackConfig(time_budget_s=-1.0)
    with pytest.raises(ValueError, match="`seed`"):
        AttackConfig(seed=-1)
    model, tokenizer, data = setup["model"], setup["tokenizer"], setup["data"]
    with pytest.raises(ValueError, match="no column"):
        attack_model(model, tokenizer, data, config(setup), text_columns=("text",))
    with pytest.raises(ValueError, match="`text_columns`"):
        attack_model(model, tokenizer, data, config(setup), text_columns=("a", "b", "c"))
    with pytest.raises(ValueError, match="unlabelled"):
        attack_model(model, tokenizer, [{"sentence": "fine", "label": -1}], config(setup))
    with pytest.raises(TypeError, match="`config`"):
        attack_model(model, tokenizer, data, {"recipe": "deepwordbug"})  # type: ignore[arg-type]
