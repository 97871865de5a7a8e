"""The isolated path gives the same outcomes as TextAttack run in one process.

This process (transformers 5, no TextAttack) attacks a tiny local BERT through the worker; the
reference attacks the same saved model on the same rows with TextAttack in one process, inside
the isolated environment (``tests/isolated_reference.py``). Per example: status, perturbed text,
query count and labels must be identical, and so must the summaries.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from attack_helpers import make_classifier, raw_dataset
from transformers import AutoTokenizer, BertForSequenceClassification

from loyalkit.robustness.attack_env import find_environment
from loyalkit.robustness.attack_runner import AttackConfig, attack_model, sample_rows
from loyalkit.robustness.isolated import AttackWorker, _loyalkit_dir
from loyalkit.robustness.isolated_job import config_to_message
from loyalkit.robustness.textattack_setup import OfflineResources, prepare_nltk_data

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NEIGHBOURS = SHARED / "word_substitution" / "counterfitted_neighbors.json"
LEXNAMES = SHARED / "wordnet" / "lexnames"
REFERENCE = Path(__file__).resolve().parent / "isolated_reference.py"
NUM_EXAMPLES = 10


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Any:
    torch.set_num_threads(1)
    folder = make_classifier(tmp_path_factory.mktemp("classifier"), steps=20)
    resources_dir = tmp_path_factory.mktemp("resources")
    resources = OfflineResources(
        nltk_data=prepare_nltk_data(resources_dir / "nltk", lexnames=LEXNAMES),
        cache_dir=resources_dir / "textattack",
        synonyms=NEIGHBOURS,
    )
    model = BertForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows = sample_rows(raw_dataset(60, 3), NUM_EXAMPLES, seed=0)
    with AttackWorker() as worker:
        yield {
            "folder": folder,
            "resources": resources,
            "model": model,
            "tokenizer": tokenizer,
            "rows": rows,
            "worker": worker,
        }


def in_process_reference(setup: Any, config: AttackConfig, tmp_path: Path) -> dict[str, Any]:
    job = tmp_path / "job.json"
    message = {
        "config": config_to_message(config),
        "rows": [[i, list(texts), label] for i, texts, label in setup["rows"]],
        "text_columns": ["sentence"],
    }
    job.write_text(json.dumps(message), encoding="utf-8")
    python = find_environment().python
    command = [str(python), "-I", str(REFERENCE), "--loyalkit-dir", str(_loyalkit_dir())]
    command += ["--model", str(setup["folder"]), "--job", str(job)]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return bool(a == b)


@pytest.mark.parametrize("recipe", ["deepwordbug", "pwws-offline", "textfooler-offline"])
def test_isolated_equals_in_process(setup: Any, recipe: str, tmp_path: Path) -> None:
    config = AttackConfig(
        recipe=recipe, num_examples=NUM_EXAMPLES, seed=0, resources=setup["resources"]
    )
    isolated = setup["worker"].attack(setup["model"], setup["tokenizer"], setup["rows"], config)
    reference = in_process_reference(setup, config, tmp_path)
    keys = ("index", "status", "perturbed_text", "queries", "original_label", "perturbed_label")
    got = [tuple(e[k] for k in keys) for e in isolated.examples]
    expected = [tuple(e[k] for k in keys) for e in reference["examples"]]
    assert got == expected
    assert all(same(isolated.summary[k], v) for k, v in reference["summary"].items())
    statuses = [e["status"] for e in isolated.examples]
    assert "succeeded" in statuses and "error" not in statuses  # a real attack, not a no-op


def test_attack_model_reports_progress_and_the_same_outcomes(setup: Any) -> None:
    """attack_model's ``progress(done, sampled)`` hook: 0 first, then once per example; the hook
    changes nothing in the report (same rows, same outcomes as the worker's own call)."""
    config = AttackConfig(
        recipe="deepwordbug", num_examples=NUM_EXAMPLES, seed=0, resources=setup["resources"]
    )
    calls: list[tuple[int, int]] = []
    report = attack_model(
        setup["model"],
        setup["tokenizer"],
        raw_dataset(60, 3),
        config,
        worker=setup["worker"],
        progress=lambda done, sampled: calls.append((done, sampled)),
    )
    assert calls == [(done, NUM_EXAMPLES) for done in range(NUM_EXAMPLES + 1)]
    plain = setup["worker"].attack(setup["model"], setup["tokenizer"], setup["rows"], config)
    keys = ("index", "status", "perturbed_text", "queries")
    assert [tuple(e[k] for k in keys) for e in report.examples] == [
        tuple(e[k] for k in keys) for e in plain.examples
    ]
