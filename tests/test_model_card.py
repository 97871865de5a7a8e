"""Model cards of the study's compressed models, the push to the Hub (a fake ``HfApi`` records the
calls) with its offline dry run, and ``loyalkit study push``.

The card's front matter is read back here with PyYAML and with huggingface_hub's own parser; the
expected model-index entries are written by hand from the synthetic results of
tests/test_study_report.py.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from fake_hub import FakeHub, fingerprint
from huggingface_hub import EvalResult, ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from test_study_report import RESULTS
from tiny_bert import tiny_bert, tiny_tokenizer

from loyalkit.cli.study_push import add_push_parser, run_push
from loyalkit.study.hub_push import push_model
from loyalkit.study.model_card import (
    ModelCardError,
    build_model_card,
    check_model_card,
    find_run,
    is_int8,
)

# The run pushed below: Q8-PTQ, seed 1 (values from tests/test_study_report.py).
SEED_1 = {
    "accuracy": 0.82,
    "label_loyalty": 0.92,
    "probability_loyalty": 0.88,
    "flips": 0.07,
    "after_attack_accuracy": 0.44,
    "attack_success_rate": 0.45,
    "mean_queries": 92.0,
    "speedup": 1.8,
}


def study_results(teacher_model: str = "minilm", dataset: str | None = "glue") -> dict[str, Any]:
    results = copy.deepcopy(RESULTS)
    results["config"]["teacher"] = {"model": teacher_model}
    results["config"]["task"] = {
        "dataset": dataset,
        "dataset_config": "sst2" if dataset else None,
        "validation_split": "validation",
    }
    results["config"]["methods"] = {"int8-ptq": {"enabled": True}}
    return results


def front_matter(text: str) -> dict[str, Any]:
    match = re.match(r"^---\n(.*?)\n---\n", text, flags=re.DOTALL)
    assert match, text[:200]
    return yaml.safe_load(match.group(1))


def expected_results(dataset_type: str, config: str | None) -> list[EvalResult]:
    names = {
        "accuracy": "Accuracy",
        "label_loyalty": "Label loyalty",
        "probability_loyalty": "Probability loyalty",
        "flips": "Flips",
        "after_attack_accuracy": "After-attack accuracy",
        "attack_success_rate": "Attack success rate",
        "mean_queries": "Mean queries per attacked example",
        "speedup": "CPU speed-up over the teacher",
    }
    return [
        EvalResult(
            task_type="text-classification",
            task_name="Text Classification",
            dataset_type=dataset_type,
            dataset_name="sst2",
            dataset_config=config,
            dataset_split="validation",
            metric_type=key,
            metric_name=names[key],
            metric_value=value,
        )
        for key, value in SEED_1.items()
    ]


# ---------------------------------------------------------------- the card


def test_card_front_matter_records_loyalty_robustness_and_speedup():
    card = build_model_card(study_results(), "int8-ptq", 1, repo_id="someone/sst2-q8")
    meta = front_matter(str(card))
    assert meta["base_model"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert meta["tags"][:3] == ["loyalkit", "compression", "int8-ptq"]
    assert meta["datasets"] == ["glue"]
    (index,) = meta["model-index"]
    assert index["name"] == "sst2-q8"
    (result,) = index["results"]
    assert result["task"]["type"] == "text-classification"
    assert result["dataset"] == {
        "name": "sst2",
        "type": "glue",
        "config": "sst2",
        "split": "validation",
    }
    assert {m["type"]: m["value"] for m in result["metrics"]} == SEED_1
    assert all(m["name"] for m in result["metrics"])

    # huggingface_hub's parser gives back exactly what was meant.
    parsed = ModelCard(str(card))
    assert parsed.data.eval_results == expected_results("glue", "sst2")
    assert model_index_to_eval_results(meta["model-index"])[1] == expected_results("glue", "sst2")
    assert check_model_card(card, expected_results("glue", "sst2")).data.model_name == "sst2-q8"


def test_card_body_numbers_loading_and_citation():
    from loyalkit.citation import XU_2021_CITATION

    text = str(build_model_card(study_results(), "int8-ptq", 1, repo_id="someone/sst2-q8"))
    # Seed 1 beside the teacher and the method's mean ± sample std over 3 seeds (by hand).
    for row in [
        "| Metric | This model | Teacher | Q8-PTQ, 3 seeds |",
        "| Accuracy (%) | 82.0 | 83.0 | 81.0 ± 1.0 |",
        "| Label loyalty (%) | 92.0 | 100.0 | 92.0 ± 2.0 |",
        "| Probability loyalty (%) | 88.0 | 100.0 | 88.0 ± 3.0 |",
        "| After-attack accuracy (%) | 44.0 | 8.1 | 40.0 ± 4.0 |",
        "| CPU speed-up | 1.80x | 1.00x | 1.80 ± 0.10x |",
        "| Size on disk (MB) | 23.1 | 86.7 | — |",
    ]:
        assert row in text.splitlines(), row
    assert 'OpenVINOInt8Classifier.from_pretrained("someone/sst2-q8")' in text
    assert "The model is int8 OpenVINO IR" in text
    assert XU_2021_CITATION.strip() in text
    assert "Attack: `textfooler-offline` on 10 validation examples" in text


def test_card_marks_a_speedup_timed_under_load_and_says_the_load():
    results = study_results()
    results["runs"][1]["timing"] = {"load_before": 3.5, "load_after": 2.75, "cpu_count": 2}
    lines = str(build_model_card(results, "int8-ptq", 1)).splitlines()
    assert "| CPU speed-up | 1.80x † | 1.00x | 1.80 ± 0.10x † |" in lines
    assert (
        "† This model's speed-up was timed under load (1-min load average 3.50 before, 2.75 after "
        "timing, 2 CPUs (limit 2.0)): other processes competed for the cores, so the figure may "
        "be off either way."
    ) in lines
    results["runs"][1]["timing"] = {"load_before": 0.5, "load_after": 1.25, "cpu_count": 2}
    lines = str(build_model_card(results, "int8-ptq", 1)).splitlines()
    assert "| CPU speed-up | 1.80x | 1.00x | 1.80 ± 0.10x |" in lines
    assert not any("under load" in line or "without a record" in line for line in lines)
    # Another seed of the method under load: the seeds' column is marked, this model's is not.
    results["runs"][0]["timing"] = {"load_before": 0.5, "load_after": 4.0, "cpu_count": 2}
    lines = str(build_model_card(results, "int8-ptq", 1)).splitlines()
    assert "| CPU speed-up | 1.80x | 1.00x | 1.80 ± 0.10x † |" in lines
    note = "† Seeds of Q8-PTQ timed under load: 1 of 3 (the study's results.md gives the load of each)."
    assert note in lines
    # Results from before the load was recorded say so.
    lines = str(build_model_card(study_results(), "int8-ptq", 1)).splitlines()
    assert "The speed-up was timed without a record of the machine's load." in lines


def test_card_of_a_local_teacher_and_local_files_has_no_base_model_or_datasets(tmp_path: Path):
    results = study_results(teacher_model=str(tmp_path), dataset=None)
    card = build_model_card(results, "kd", 0)
    meta = front_matter(str(card))
    assert "base_model" not in meta and "datasets" not in meta
    assert meta["tags"][:3] == ["loyalkit", "compression", "kd"]
    (result,) = meta["model-index"][0]["results"]
    assert result["dataset"] == {"name": "sst2", "type": "sst2", "split": "validation"}
    # KD ran no attack and is not int8: no attack metrics, no int8 note, no seeds column for 1 seed.
    assert [m["type"] for m in result["metrics"]] == [
        "accuracy", "label_loyalty", "probability_loyalty", "flips", "speedup"
    ]  # fmt: skip
    assert [m["value"] for m in result["metrics"]] == [0.78, 0.85, 0.90, 0.10, 1.9]
    assert "The model is int8" not in str(card)
    assert 'AutoModelForSequenceClassification.from_pretrained("' in str(card)
    assert "| Metric | This model | Teacher | KD, 2 seeds |" in str(card)
    hub = build_model_card(
        study_results(teacher_model="textattack/bert-base-uncased-SST-2"), "kd", 1
    )
    assert front_matter(str(hub))["base_model"] == "textattack/bert-base-uncased-SST-2"
    explicit = build_model_card(results, "kd", 1, base_model="org/base", license="apache-2.0")
    assert front_matter(str(explicit))["base_model"] == "org/base"
    assert front_matter(str(explicit))["license"] == "apache-2.0"


def test_find_run_errors_name_the_argument():
    results = study_results()
    assert find_run(results, "int8-ptq", 2).accuracy == 0.81
    with pytest.raises(
        ValueError, match=r"`method` 'pkd' is not in the results; available: int8-ptq, kd"
    ):
        find_run(results, "pkd", 0)
    with pytest.raises(ValueError, match=r"method 'kd' seed 2 failed"):
        find_run(results, "kd", 2)
    with pytest.raises(ValueError, match=r"`seed` 7 did not run for method 'kd'; seeds: 0, 1, 2"):
        find_run(results, "kd", 7)
    with pytest.raises(ValueError, match=r"`seed`: method 'int8-ptq' has done seeds 0, 1, 2"):
        find_run(results, "int8-ptq")


def _break(card: str, old: str, new: str) -> str:
    assert old in card
    return card.replace(old, new, 1)


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ("- loyalkit\n", "", r"tags lack loyalkit"),
        ("value: 0.82", "value: 0.5", r"parsed model-index results differ"),
        ("model-index:", "model-index: [", r"metadata is invalid"),
        ("  results:\n", "  resultz:\n", r"metadata is invalid|no model-index results"),
    ],
)
def test_check_model_card_refuses_broken_cards(old: str, new: str, problem: str):
    text = str(build_model_card(study_results(), "int8-ptq", 1, repo_id="someone/sst2-q8"))
    with pytest.raises(ModelCardError, match=problem):
        check_model_card(_break(text, old, new), expected_results("glue", "sst2"))


# ---------------------------------------------------------------- push


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    torch.set_num_threads(1)
    folder = tmp_path / "study" / "methods" / "kd" / "seed-0" / "model"
    tiny_bert(num_labels=2, num_layers=1).save_pretrained(folder)
    tiny_tokenizer(folder)
    (folder / "README.md").write_text("an old readme")
    return folder


def test_dry_run_validates_and_lists_files_without_any_hub_call(model_dir: Path):
    before = fingerprint(model_dir)
    card = build_model_card(study_results(), "kd", 0, repo_id="someone/kd")
    hub = FakeHub()
    plan = push_model(model_dir, "someone/kd", card, dry_run=True, api=hub)
    assert hub.calls == []
    sizes = dict(plan.files)
    on_disk = {p.name: p.stat().st_size for p in model_dir.iterdir() if p.name != "README.md"}
    assert sizes == {**on_disk, "README.md": len(str(card).encode("utf-8"))}
    assert plan.url.endswith("/someone/kd") and plan.dry_run and plan.card == str(card)
    assert fingerprint(model_dir) == before


def test_push_creates_a_model_repo_and_uploads_the_folder_with_the_card(model_dir: Path):
    before = fingerprint(model_dir)
    card = build_model_card(study_results(), "kd", 0, repo_id="someone/kd")
    hub = FakeHub()
    push_model(model_dir, "someone/kd", card, api=hub, private=True)
    assert hub.calls[0] == (
        "create_repo",
        {"repo_id": "someone/kd", "repo_type": "model", "private": True, "exist_ok": True},
    )
    assert hub.calls[1][0] == "upload_folder"
    assert hub.calls[1][1]["repo_id"] == "someone/kd" and hub.calls[1][1]["repo_type"] == "model"
    uploaded = hub.uploaded["someone/kd"]
    assert uploaded["README.md"].decode("utf-8") == str(card)
    for name in before:
        if name != "README.md":
            assert uploaded[name] == (model_dir / name).read_bytes()
    assert set(uploaded) == set(before)
    assert fingerprint(model_dir) == before  # the study's folder is untouched


@pytest.mark.parametrize(
    ("repo_id", "message"),
    [("no-owner", r"`repo_id` must be 'owner/name'"), ("a/b/c", r"`repo_id` must be 'owner/name'"),
     ("someone/bad name", r"`repo_id` 'someone/bad name' is not a valid Hub repository id")],
)  # fmt: skip
def test_push_refuses_a_bad_repo_id(model_dir: Path, repo_id: str, message: str):
    card = build_model_card(study_results(), "kd", 0)
    with pytest.raises(ValueError, match=message):
        push_model(model_dir, repo_id, card, api=FakeHub())


def test_push_refuses_a_folder_without_model_and_an_invalid_card(model_dir: Path, tmp_path: Path):
    card = build_model_card(study_results(), "kd", 0)
    hub = FakeHub()
    with pytest.raises(FileNotFoundError, match=r"`model_dir` '.*missing' is not a folder"):
        push_model(tmp_path / "missing", "someone/kd", card, api=hub)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=r"`model_dir` .* holds no weights"):
        push_model(empty, "someone/kd", card, api=hub)
    with pytest.raises(ModelCardError, match=r"tags lack loyalkit"):
        push_model(model_dir, "someone/kd", str(card).replace("- loyalkit\n", ""), api=hub)
    assert hub.calls == []


def test_int8_model_card_says_so_and_the_folder_reloads_as_it_says(tmp_path: Path):
    from loyalkit.compression import OpenVINOInt8Classifier, export_int8

    torch.set_num_threads(1)
    model = tiny_bert(num_labels=2, num_layers=1)
    ids = torch.tensor([[1, 5, 7, 9, 2], [1, 6, 8, 2, 0]])
    mask = (ids != 0).long()
    export_int8(model, tmp_path / "q8", [{"input_ids": ids, "attention_mask": mask}])
    run = {"method": "renamed", "title": "x"}
    assert is_int8(run, tmp_path / "q8")  # from config.json, not from the name
    assert is_int8({"method": "int8-ptq"}) and not is_int8({"method": "kd"})  # by name, no folder
    model.save_pretrained(tmp_path / "float")
    assert not is_int8({"method": "int8-ptq"}, tmp_path / "float")  # the folder decides
    results = study_results()
    results["runs"][0]["method"] = "renamed"
    card = str(build_model_card(results, "renamed", 0, model_dir=tmp_path / "q8"))
    assert "The model is int8 OpenVINO IR" in card
    assert "OpenVINOInt8Classifier.from_pretrained(" in card
    first = OpenVINOInt8Classifier.from_pretrained(tmp_path / "q8")
    again = OpenVINOInt8Classifier.from_pretrained(tmp_path / "q8")
    logits = first(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(logits, again(input_ids=ids, attention_mask=mask).logits)
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(logits, expected, atol=0.1 * expected.abs().max().item() + 1e-3)


# ---------------------------------------------------------------- loyalkit study push


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="loyalkit study")
    add_push_parser(parser.add_subparsers(dest="study_command"))
    return parser.parse_args(["push", *argv])


def _study_folder(tmp_path: Path, model_dir: Path) -> Path:
    folder = model_dir.parents[3]
    results = study_results()
    results["runs"][3]["model_dir"] = model_dir.relative_to(folder).as_posix()
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_cli_dry_run_writes_the_card_and_lists_files(model_dir: Path, tmp_path: Path, capsys):
    folder = _study_folder(tmp_path, model_dir)
    args = _parse([str(folder), "--method", "kd", "--seed", "0", "--repo-id", "me/kd", "--dry-run"])
    hub = FakeHub()
    assert run_push(args, api=hub) == 0
    assert hub.calls == []
    out = capsys.readouterr().out
    assert out.startswith("Dry run, nothing uploaded. The card is valid")
    assert "Would create the public model repository me/kd" in out
    assert re.search(r"^  README\.md +[\d,]+ bytes$", out, flags=re.MULTILINE)
    assert re.search(r"^  accuracy +0\.78$", out, flags=re.MULTILINE)
    card = (folder / "cards" / "kd-seed-0.md").read_text()
    assert {
        m["type"]: m["value"] for m in front_matter(card)["model-index"][0]["results"][0]["metrics"]
    }["label_loyalty"] == 0.85


def test_cli_push_with_a_fake_hub(model_dir: Path, tmp_path: Path, capsys):
    folder = _study_folder(tmp_path, model_dir)
    args = _parse([str(folder), "--method", "kd", "--seed", "0", "--repo-id", "me/kd", "--private"])
    hub = FakeHub()
    assert run_push(args, api=hub) == 0
    assert [call for call, _ in hub.calls] == ["create_repo", "upload_folder"]
    assert hub.calls[0][1]["private"] is True
    assert "Pushed me/kd" in capsys.readouterr().out
    assert front_matter(hub.uploaded["me/kd"]["README.md"].decode())["tags"][2] == "kd"


def test_cli_errors(tmp_path: Path, model_dir: Path):
    with pytest.raises(FileNotFoundError, match=r"holds no results\.json"):
        run_push(_parse([str(tmp_path), "--method", "kd", "--repo-id", "me/kd"]))
    folder = _study_folder(tmp_path, model_dir)
    with pytest.raises(ValueError, match=r"method 'kd' seed 2 failed"):
        run_push(_parse([str(folder), "--method", "kd", "--seed", "2", "--repo-id", "me/kd"]))
    with pytest.raises(ValueError, match=r"`repo_id` must be 'owner/name'"):
        run_push(_parse([str(folder), "--method", "kd", "--seed", "0", "--repo-id", "kd"]))
