"""AttackCallback under ``torchrun`` and ``accelerate launch`` with 2 CPU processes (gloo).

``tests/attack_distributed_worker.py`` evaluates a saved tiny classifier (training at learning rate
0, so every run attacks the same weights) with an AttackCallback after each of 2 steps and once
more at the end, as a single process and under each launcher. Checked: no deadlock (every run
under a timeout), each rank attacks its share of the rows with its own worker, both ranks log and
return the same (gathered) attack numbers, equal to the single process's and to ``attack_model``
run here on the same model.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from attack_distributed_worker import ATTACK_EXAMPLES, EVAL_SIZE
from attack_helpers import make_classifier, offline_resources, raw_dataset
from test_distributed import LAUNCHERS, free_port, run
from transformers import AutoTokenizer, BertForSequenceClassification

from loyalkit.robustness.attack_runner import SUMMARY_KEYS, AttackConfig, attack_model

WORKER = Path(__file__).resolve().parent / "attack_distributed_worker.py"
KEYS = [f"eval_attack_{key}" for key in SUMMARY_KEYS]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_classifier(tmp_path_factory.mktemp("classifier"))


@pytest.fixture(scope="module")
def resources_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("resources")
    offline_resources(folder)
    return folder


@pytest.fixture(scope="module")
def single(model_dir: Path, resources_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("single")
    run([sys.executable, str(WORKER), str(model_dir), str(resources_dir), str(out)], out / "log")
    return out


def attack_logs(result: dict[str, Any]) -> list[dict[str, Any]]:
    logs = [e for e in result["log_history"] if "eval_attack_num_attacked" in e]
    assert [e["step"] for e in logs] == [1, 2, 2]
    return [{key: e[key] for key in KEYS} for e in logs]


@pytest.mark.parametrize("launcher", sorted(LAUNCHERS))
def test_two_processes_agree_with_one(
    launcher: str, model_dir: Path, resources_dir: Path, single: Path, tmp_path: Path
) -> None:
    out = tmp_path / launcher
    out.mkdir()
    command = [*LAUNCHERS[launcher](free_port()), str(WORKER), str(model_dir)]
    run([*command, str(resources_dir), str(out)], out / "log")
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    (one,) = [json.loads((single / "rank-0.json").read_text())]

    assert one["world_size"] == 1 and one["backend"] is None
    assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["backend"] == "gloo"
    assert [r["attacked_here"] for r in ranks] == [True, True]  # each rank attacks its share
    assert [r["attacked_rows"] for r in ranks] == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert one["attacked_rows"] == list(range(ATTACK_EXAMPLES))
    assert all(r["failures"] == [] for r in (one, *ranks))
    logs = [attack_logs(r) for r in (one, *ranks)]
    assert logs[1] == logs[2] == logs[0]
    finals = [{key: r["final_eval"][key] for key in KEYS} for r in (one, *ranks)]
    assert finals[1] == finals[2] == finals[0] == logs[0][-1]

    # The numbers are attack_model's on the same model, computed here.
    torch.set_num_threads(1)
    report = attack_model(
        BertForSequenceClassification.from_pretrained(model_dir),
        AutoTokenizer.from_pretrained(model_dir),
        raw_dataset(EVAL_SIZE, 1),
        AttackConfig(
            recipe="deepwordbug",
            num_examples=ATTACK_EXAMPLES,
            seed=3,
            resources=offline_resources(resources_dir),
            seed_each_example=True,
        ),
    )
    assert finals[0] == {f"eval_attack_{k}": float(v) for k, v in report.summary.items()}
    assert report.summary["num_succeeded"] > 0  # not a degenerate comparison
