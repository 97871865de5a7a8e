"""DynamicPaddingModelWrapper against TextAttack's own HuggingFaceModelWrapper (the reference)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from attack_helpers import classifier_setup, raw_dataset

from loyalkit.robustness.model_wrapper import TimeBudgetExceeded, predict_logits, wrap_model
from loyalkit.robustness.recipes import build_attack
from loyalkit.robustness.textattack_setup import import_textattack

pytestmark = pytest.mark.attack


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    loaded = classifier_setup(tmp_path_factory)
    return {**loaded, "textattack": import_textattack(loaded["resources"])}


def stock(setup: dict[str, Any], model: Any = None) -> Any:
    wrappers = setup["textattack"].models.wrappers
    return wrappers.HuggingFaceModelWrapper(model or setup["model"], setup["tokenizer"])


def attack_outcomes(setup: dict[str, Any], wrapper: Any, rows: list[tuple[str, int]]) -> list:
    """Attack each row as TextAttack's Attacker does (one seed, then the rows in order)."""
    attack = build_attack("deepwordbug", wrapper, setup["resources"])
    setup["textattack"].shared.utils.set_seed(0)
    outcomes = []
    for text, label in rows:
        result = attack.attack(text, label)
        outcomes.append(
            (
                type(result).__name__,
                result.perturbed_result.attacked_text.text,
                result.num_queries,
                result.perturbed_result.raw_output,
            )
        )
    return outcomes


def test_same_attack_results_as_the_stock_wrapper(setup: dict[str, Any]) -> None:
    data = raw_dataset(24, seed=1)
    rows = list(zip(data["sentence"], data["label"], strict=True))
    expected = attack_outcomes(setup, stock(setup), rows)
    got = attack_outcomes(setup, wrap_model(setup["model"], setup["tokenizer"]), rows)
    statuses = [outcome[0] for outcome in expected]
    # Not a degenerate comparison: all three outcomes occur.
    assert {"SuccessfulAttackResult", "FailedAttackResult"} <= set(statuses)
    for (status, text, queries, output), (status2, text2, queries2, output2) in zip(
        expected, got, strict=True
    ):
        assert (status2, text2, queries2) == (status, text, queries)
        torch.testing.assert_close(output2, output, rtol=1e-5, atol=1e-6)


def test_logits_match_the_stock_wrapper_for_sentences_and_pairs(setup: dict[str, Any]) -> None:
    texts = ["good", "the movie was really very good and fun", "a dull , boring film !"]
    pairs = [("good", "bad movie"), ("the film was fine", "it is a mess"), ("a", "b")]
    for inputs in (texts, pairs):
        reference = stock(setup)(inputs)
        # The stock wrapper pads these to the tokenizer's maximum (64): a real difference.
        wrapper = wrap_model(setup["model"], setup["tokenizer"], batch_size=2)
        torch.testing.assert_close(wrapper(inputs), reference, rtol=1e-5, atol=1e-6)


def test_eval_mode_no_grad_and_the_mode_is_restored(setup: dict[str, Any]) -> None:
    model = copy.deepcopy(setup["model"]).train()  # dropout active
    wrapper = wrap_model(model, setup["tokenizer"])
    texts = ["the movie was good", "an awful mess"]
    logits = wrapper(texts)
    assert model.training  # restored
    assert not logits.requires_grad
    torch.testing.assert_close(logits, stock(setup, setup["model"])(texts))
    torch.testing.assert_close(wrapper(texts), logits)  # dropout was off: deterministic


def test_predict_logits_batches_independently_of_batch_size(setup: dict[str, Any]) -> None:
    texts = [f"the film was {w}" for w in ("good", "bad", "fun", "a mess", "very dull", "fine")]
    whole = predict_logits(setup["model"], setup["tokenizer"], texts, batch_size=32)
    parts = predict_logits(setup["model"], setup["tokenizer"], texts, batch_size=4)
    assert whole.shape == (6, 2)
    torch.testing.assert_close(parts, whole, rtol=1e-5, atol=1e-6)


def test_a_query_after_the_deadline_raises(setup: dict[str, Any]) -> None:
    now = [0.0]
    wrapper = wrap_model(setup["model"], setup["tokenizer"])
    wrapper.deadline, wrapper.clock = 1.0, lambda: now[0]
    assert wrapper(["fine"]).shape == (1, 2)
    now[0] = 2.0
    with pytest.raises(TimeBudgetExceeded):
        wrapper(["fine"])


def test_bad_arguments(setup: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="`model`"):
        wrap_model("bert", setup["tokenizer"])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="`tokenizer`"):
        wrap_model(setup["model"], "tokenizer")
    with pytest.raises(ValueError, match="`batch_size`"):
        wrap_model(setup["model"], setup["tokenizer"], batch_size=0)
