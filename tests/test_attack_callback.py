"""AttackCallback in real Trainer runs on tiny BERTs; its numbers against attack_model.

Runs in the main environment (transformers 5, no TextAttack): the callback and the reference
``attack_model`` both attack through workers in the isolated environment (``loyalkit attack
setup``); that this equals TextAttack in one process is ``tests/test_isolated_parity.py``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from attack_helpers import RaisesOnToken, classifier_setup, raw_dataset
from torch import nn
from trainer_helpers import training_args
from transformers import BertForSequenceClassification, Trainer, TrainingArguments

from loyalkit.robustness.attack_runner import SUMMARY_KEYS, AttackConfig, attack_model
from loyalkit.robustness.isolated import AttackWorker

NUM_EXAMPLES = 12


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Any:
    loaded = classifier_setup(tmp_path_factory, steps=10)
    tokenizer = loaded["tokenizer"]
    with AttackWorker() as reference:  # one worker for every reference attack of this module
        yield {
            **loaded,
            "train": raw_dataset(48, 0, tokenizer),
            "eval": raw_dataset(30, 1, tokenizer),
            "reference": reference,
        }


def args(output_dir: Path, **overrides: Any) -> TrainingArguments:
    """:func:`training_args` over two steps at 1e-3, evaluating (batch 8) after each."""
    settings: dict[str, Any] = dict(
        max_steps=2,
        per_device_eval_batch_size=8,
        learning_rate=1e-3,
        eval_strategy="steps",
        eval_steps=1,
    )
    settings.update(overrides)
    return training_args(output_dir, **settings)


def trainer_for(setup: dict[str, Any], training: TrainingArguments, model: Any = None) -> Trainer:
    if model is None:
        model = BertForSequenceClassification.from_pretrained(setup["folder"])
    return Trainer(
        model=model,
        args=training,
        train_dataset=setup["train"],
        eval_dataset=setup["eval"],
        processing_class=setup["tokenizer"],
    )


def attack_settings(setup: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """DeepWordBug on ``NUM_EXAMPLES`` examples, seed 0, the offline resources; ``overrides``."""
    settings: dict[str, Any] = dict(
        recipe="deepwordbug", num_examples=NUM_EXAMPLES, seed=0, resources=setup["resources"]
    )
    settings.update(overrides)
    return settings


def callback(setup: dict[str, Any], **overrides: Any) -> Any:
    from loyalkit.callbacks import AttackCallback

    return AttackCallback(**attack_settings(setup, **overrides))


def expected_summary(setup: dict[str, Any], model: nn.Module, **overrides: Any) -> dict[str, Any]:
    # The callback seeds TextAttack before each example (its rows may be split across processes).
    config = AttackConfig(**attack_settings(setup, **overrides), seed_each_example=True)
    return attack_model(
        model, setup["tokenizer"], setup["eval"], config, worker=setup["reference"]
    ).summary


def test_values_reach_evaluate_and_the_logs(setup: dict[str, Any], tmp_path: Path) -> None:
    trainer = trainer_for(setup, args(tmp_path))
    attack_callback = callback(setup).attach(trainer)
    trainer.train()
    metrics = trainer.evaluate()
    summary = expected_summary(setup, trainer.model)
    assert summary["num_succeeded"] > 0 and summary["num_failed"] > 0  # not degenerate
    for key in SUMMARY_KEYS:
        assert metrics[f"eval_attack_{key}"] == summary[key], key
    logged = [log for log in trainer.state.log_history if "eval_attack_num_attacked" in log]
    assert [log["step"] for log in logged] == [1, 2, 2]
    assert {k: logged[-1][f"eval_attack_{k}"] for k in SUMMARY_KEYS} == summary
    assert attack_callback.last_report is not None and attack_callback.failures == []


def test_repeated_evaluations_reuse_the_attack_and_agree(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    trainer = trainer_for(setup, args(tmp_path))
    attack_callback = callback(setup, examples_dir=tmp_path / "examples").attach(trainer)
    first = trainer.evaluate()
    worker = attack_callback.worker.pid
    second = trainer.evaluate()
    # One worker for the Trainer: started once, the recipe kept, its model-output cache cleared.
    assert worker is not None and attack_callback.worker.pid == worker
    assert attack_callback.worker.starts == 1
    keys = [f"eval_attack_{k}" for k in SUMMARY_KEYS]
    assert [first[k] for k in keys] == [second[k] for k in keys]
    saved = json.loads((tmp_path / "examples" / "eval-step-0.json").read_text())
    assert saved["summary"]["num_attacked"] == first["eval_attack_num_attacked"]


def test_a_dict_of_eval_sets_attacks_the_one_evaluated(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    trainer = trainer_for(setup, args(tmp_path))
    other = raw_dataset(30, 7, setup["tokenizer"])
    trainer.eval_dataset = {"dev": setup["eval"], "other": other}
    callback(setup).attach(trainer)
    dev = trainer.evaluate(eval_dataset=setup["eval"], metric_key_prefix="eval_dev")
    metrics = trainer.evaluate(eval_dataset=other, metric_key_prefix="eval_other")
    assert {k: dev[f"eval_dev_attack_{k}"] for k in SUMMARY_KEYS} == expected_summary(
        setup, trainer.model
    )
    report = attack_model(
        trainer.model,
        setup["tokenizer"],
        other,
        AttackConfig(
            recipe="deepwordbug",
            num_examples=NUM_EXAMPLES,
            resources=setup["resources"],
            seed_each_example=True,
        ),
        worker=setup["reference"],
    )
    assert {k: metrics[f"eval_other_attack_{k}"] for k in SUMMARY_KEYS} == report.summary


def test_best_model_by_after_attack_accuracy(setup: dict[str, Any], tmp_path: Path) -> None:
    training = args(
        tmp_path,
        max_steps=5,
        learning_rate=3e-3,
        save_strategy="steps",
        save_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="attack_after_attack_accuracy",
        greater_is_better=True,
    )
    trainer = trainer_for(setup, training)  # the classifier, still learning
    callback(setup).attach(trainer)
    trainer.train()
    history = [log for log in trainer.state.log_history if "eval_attack_num_attacked" in log]
    values = [log["eval_attack_after_attack_accuracy"] for log in history]
    assert len(set(values)) > 1  # the checkpoints can be told apart
    best_step = history[int(np.argmax(values))]["step"]  # the first maximum wins
    assert trainer.state.best_metric == pytest.approx(max(values))
    assert trainer.state.best_model_checkpoint.endswith(f"checkpoint-{best_step}")
    assert trainer.evaluate()["eval_attack_after_attack_accuracy"] == pytest.approx(max(values))


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def predict(model: nn.Module, tokenizer: Any, texts: list[str]) -> list[int]:
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        return model(**batch).logits.argmax(-1).tolist()


def test_the_default_recipe_runs_after_prepare_data(setup: dict[str, Any], tmp_path: Path) -> None:
    from loyalkit.callbacks import AttackCallback
    from loyalkit.cli import main
    from loyalkit.robustness.textattack_setup import OfflineResources

    # What the README's setup gives a fresh machine, offline: Debian's WordNet (make
    # system-deps) and a local copy of the upstream neighbour sets.
    neighbours = SHARED / "word_substitution" / "counterfitted_neighbors.json"
    folders = ["--target", str(tmp_path / "nltk"), "--cache-dir", str(tmp_path / "cache")]
    assert main(["attack", "prepare-data", *folders, "--neighbours", str(neighbours)]) == 0
    resources = OfflineResources(nltk_data=tmp_path / "nltk", cache_dir=tmp_path / "cache")
    trainer = trainer_for(setup, args(tmp_path / "run", eval_strategy="no"))
    attack_callback = AttackCallback(num_examples=8, seed=0, resources=resources).attach(trainer)
    assert attack_callback.config.recipe == "textfooler-offline"
    metrics = trainer.evaluate()
    assert attack_callback.failures == []
    report = attack_callback.last_report
    assert report is not None and metrics["eval_attack_num_attacked"] > 0
    # Checked against the model itself, outside TextAttack: the sampled rows' accuracy, and every
    # successful adversarial text changes the model's prediction.
    rows = np.random.default_rng(0).permutation(len(setup["eval"]))[:8]
    texts = [setup["eval"][int(i)]["sentence"] for i in rows]
    gold = [setup["eval"][int(i)]["label"] for i in rows]
    correct = np.mean(np.equal(predict(trainer.model, setup["tokenizer"], texts), gold))
    assert metrics["eval_attack_original_accuracy"] == pytest.approx(correct)
    succeeded = [e for e in report.examples if e["status"] == "succeeded"]
    assert metrics["eval_attack_num_succeeded"] == len(succeeded)
    if succeeded:
        after = predict(trainer.model, setup["tokenizer"], [e["perturbed_text"] for e in succeeded])
        assert after == [e["perturbed_label"] for e in succeeded]
        assert all(e["perturbed_label"] != e["original_label"] for e in succeeded)
    failed = metrics["eval_attack_num_failed"]
    assert metrics["eval_attack_after_attack_accuracy"] == pytest.approx(failed / 8)


def test_missing_resources_fail_at_attach_naming_the_command(
    setup: dict[str, Any], tmp_path: Path
) -> None:
    from loyalkit.callbacks import AttackCallback
    from loyalkit.robustness.textattack_setup import MissingResourceError, OfflineResources

    trainer = trainer_for(setup, args(tmp_path))
    empty = OfflineResources(nltk_data=tmp_path / "nltk", cache_dir=tmp_path / "cache")
    with pytest.raises(MissingResourceError) as raised:
        AttackCallback(num_examples=4, resources=empty).attach(trainer)
    message = str(raised.value)
    assert message.startswith("AttackCallback: recipe 'textfooler-offline' cannot run")
    assert "`loyalkit attack prepare-data --online`" in message
    assert "--neighbours" in message and "`resources=" in message
    assert str(empty.neighbours_file()) in message  # where the synonym source is looked for
    assert trainer.callback_handler.callbacks[-1].__class__.__name__ != "AttackCallback"
    # The stop words alone are enough for DeepWordBug, and a synonym file passed as `synonyms`
    # must exist.
    AttackCallback("deepwordbug", num_examples=4, resources=setup["resources"]).attach(trainer)
    with pytest.raises(MissingResourceError, match="`synonyms`='/no/such.json' does not exist"):
        AttackCallback(
            num_examples=4, resources=replace(setup["resources"], synonyms=Path("/no/such.json"))
        ).attach(trainer_for(setup, args(tmp_path)))


def test_training_survives_failing_attacks(setup: dict[str, Any], tmp_path: Path) -> None:
    # One example's attack raises: an error, the others counted.
    base = BertForSequenceClassification.from_pretrained(setup["folder"])
    model = RaisesOnToken(base, setup["tokenizer"].convert_tokens_to_ids("the"))
    trainer = trainer_for(setup, args(tmp_path / "one", eval_strategy="no"), model)
    # The Trainer evaluates rows free of the poisoned word; only the attacked rows hold it.
    clean_rows = setup["eval"].filter(lambda row: "the" not in row["sentence"].split())
    trainer.eval_dataset = clean_rows
    poisoned = [dict(row) for row in setup["eval"]]
    callback(setup, dataset=poisoned).attach(trainer)
    trainer.train()
    metrics = trainer.evaluate()
    assert 0 < metrics["eval_attack_num_errors"] < NUM_EXAMPLES
    assert metrics["eval_attack_num_attacked"] + metrics["eval_attack_num_errors"] == NUM_EXAMPLES

    # The whole attack fails (an unknown recipe): logged, NaN values, the best-model metric gets
    # its worst value, and training with best-model selection runs to the end.
    training = args(
        tmp_path / "all",
        save_strategy="steps",
        save_steps=1,
        load_best_model_at_end=True,
        metric_for_best_model="attack_after_attack_accuracy",
        greater_is_better=False,
    )
    trainer = trainer_for(setup, training)
    broken = callback(setup, recipe="no-such-recipe").attach(trainer)
    trainer.train()
    assert trainer.state.global_step == 2 and len(broken.failures) == 2
    logged = [log for log in trainer.state.log_history if "eval_attack_num_attacked" in log]
    assert len(logged) == 2
    assert all(math.isnan(log["eval_attack_attack_success_rate"]) for log in logged)
    assert all(log["eval_attack_after_attack_accuracy"] == math.inf for log in logged)


def test_misuse_is_refused(setup: dict[str, Any], tmp_path: Path) -> None:
    trainer = trainer_for(setup, args(tmp_path))
    with pytest.raises(TypeError, match="`trainer`"):
        callback(setup).attach("trainer")
    with pytest.raises(ValueError, match="raw text column"):
        callback(setup, text_columns=("premise",)).attach(trainer)
    with pytest.raises(ValueError, match="`num_examples`"):
        callback(setup, num_examples=0)
    attached = callback(setup).attach(trainer)
    with pytest.raises(ValueError, match="already attached"):
        attached.attach(trainer)
    unattached = trainer_for(setup, args(tmp_path))
    unattached.add_callback(callback(setup))
    with pytest.raises(ValueError, match="attach"):
        unattached.train()


def test_importing_the_callbacks_imports_no_textattack() -> None:
    probe = "import sys, loyalkit.callbacks; loyalkit.callbacks.AttackCallback; print(sorted(m for m in sys.modules if m.startswith(('textattack', 'flair'))))"
    imported = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert imported.strip().splitlines()[-1] == "[]"
