"""Multiple-choice loyalty from files written by real lm-evaluation-harness runs (local ARC task).

Two ``lm_eval --log_samples`` runs (tiny Llama teacher and a noisier student, about 25 s each on
one core) over a local multiple-choice and a local generative task built from 16 ARC-Easy questions
in ``../shared/data/arc``; every value is checked against scipy on the raw files and against the
accuracies lm-eval itself wrote to ``results_*.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from lm_eval_tasks import ARC_DIR, multiple_choice_yaml, read_arc
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from tiny_causal_lm import TEXTS, byte_level_tokenizer, perturbed, tiny_llama

from loyalkit.cli import main
from loyalkit.metrics.lm_eval_samples import compare_lm_eval_runs

ARC_EASY = ARC_DIR / "ARC-E" / "test" / "arc_easy_test.csv"
QUESTION = "Question: {{question}}\\nAnswer:"

GEN_TASK = """task: arc_gen_local
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices[label]}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 4
  do_sample: false
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
"""


def _lm_eval(model: Path, tasks: Path, output: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "lm_eval", "--model", "hf",
        "--model_args", f"pretrained={model},dtype=float32", "--device", "cpu",
        "--tasks", "arc_mc_local,arc_gen_local", "--include_path", str(tasks),
        "--batch_size", "8", "--output_path", str(output), "--log_samples",
    ]  # fmt: skip
    completed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lm_eval")
    questions = read_arc(ARC_EASY, 16)
    assert len(questions) == 16, "not enough ARC-Easy questions"
    data = root / "arc.jsonl"
    data.write_text("".join(json.dumps(q) + "\n" for q in questions), encoding="utf-8")
    tasks = root / "tasks"
    tasks.mkdir()
    mc_task = multiple_choice_yaml("arc_mc_local", data, QUESTION, "{{choices}}")
    (tasks / "arc_mc_local.yaml").write_text(mc_task, encoding="utf-8")
    (tasks / "arc_gen_local.yaml").write_text(GEN_TASK.format(data=data), encoding="utf-8")
    texts = TEXTS + [q["question"] + " " + " ".join(q["choices"]) for q in questions]
    tokenizer = byte_level_tokenizer(texts)
    teacher = tiny_llama(vocab_size=len(tokenizer))
    # Smaller head weights than the token-level tests: choice log-likelihoods near each other, so
    # the student's noise moves some answers.
    with __import__("torch").no_grad():
        teacher.lm_head.weight.mul_(0.1)
    student = perturbed(teacher, scale=0.5)
    outputs = []
    for name, model in (("teacher", teacher), ("student", student)):
        folder = root / f"{name}_model"
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        _lm_eval(folder, tasks, root / f"{name}_run")
        outputs.append(root / f"{name}_run")
    return outputs[0], outputs[1]


def _records(run: Path, task: str) -> dict[int, dict]:
    (path,) = run.rglob(f"samples_{task}_*.jsonl")
    return {r["doc_id"]: r for r in map(json.loads, path.read_text().splitlines())}


def _results(run: Path) -> dict:
    (path,) = run.rglob("results_*.json")
    return json.loads(path.read_text())["results"]


def test_multiple_choice_loyalty_against_scipy_and_lm_eval(runs):
    teacher_run, student_run = runs
    task = compare_lm_eval_runs(teacher_run, student_run)["tasks"]["arc_mc_local"]
    t, s = _records(teacher_run, "arc_mc_local"), _records(student_run, "arc_mc_local")
    assert task["num_docs"] == len(t) == 16
    t_ll = np.array([[float(c[0]) for c in t[i]["filtered_resps"]] for i in sorted(t)])
    s_ll = np.array([[float(c[0]) for c in s[i]["filtered_resps"]] for i in sorted(s)])
    agree = t_ll.argmax(1) == s_ll.argmax(1)
    assert task["label_loyalty"] == pytest.approx(agree.mean())
    assert task["probability_loyalty"] == pytest.approx(
        (1 - jensenshannon(softmax(t_ll, axis=1), softmax(s_ll, axis=1), axis=1)).mean()
    )
    assert task["disagreeing_docs"] == [i for i, a in zip(sorted(t), agree, strict=True) if not a]
    # Accuracies as lm-eval itself computed them, plain and length-normalised.
    teacher_results, student_results = _results(teacher_run), _results(student_run)
    assert task["teacher_accuracy"] == pytest.approx(teacher_results["arc_mc_local"]["acc,none"])
    assert task["student_accuracy"] == pytest.approx(student_results["arc_mc_local"]["acc,none"])
    assert task["num_docs_norm"] == 16
    assert task["teacher_accuracy_norm"] == pytest.approx(
        teacher_results["arc_mc_local"]["acc_norm,none"]
    )
    assert task["student_accuracy_norm"] == pytest.approx(
        student_results["arc_mc_local"]["acc_norm,none"]
    )
    t_correct = np.array([t[i]["acc"] for i in sorted(t)]) > 0
    s_correct = np.array([s[i]["acc"] for i in sorted(s)]) > 0
    assert task["flips"] == pytest.approx((t_correct != s_correct).mean())
    assert 0 < task["label_loyalty"] < 1  # the fixture's student really disagrees somewhere


def test_generative_task_reports_exact_match_flips_only(runs):
    teacher_run, student_run = runs
    task = compare_lm_eval_runs(teacher_run, student_run)["tasks"]["arc_gen_local"]
    assert "label_loyalty" not in task and "probability_loyalty" not in task
    assert "exact-match flips only" in task["note"]
    assert task["teacher_accuracy"] == pytest.approx(
        _results(teacher_run)["arc_gen_local"]["exact_match,none"]
    )
    t, s = _records(teacher_run, "arc_gen_local"), _records(student_run, "arc_gen_local")
    same = [t[i]["filtered_resps"] == s[i]["filtered_resps"] for i in sorted(t)]
    assert task["identical_outputs"] == pytest.approx(np.mean(same))


def test_cli_prints_the_table_and_writes_json(runs, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["compare", "lm-eval", str(runs[0]), str(runs[1]), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| arc_mc_local |" in printed and "| arc_mc_local (acc_norm) |" in printed
    assert "exact-match flips only" in printed
    assert set(json.loads(out.read_text())["tasks"]) == {"arc_mc_local", "arc_gen_local"}


def _copy(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "copy"))


def _rewrite(run: Path, task: str, edit) -> None:
    (path,) = run.rglob(f"samples_{task}_*.jsonl")
    path.write_text(edit(path.read_text()), encoding="utf-8")


def test_mismatched_tasks_are_named(runs, tmp_path):
    student = _copy(runs[1], tmp_path)
    for path in student.rglob("samples_arc_gen_local_*.jsonl"):
        path.unlink()
    with pytest.raises(ValueError, match=r"only in the teacher's \['arc_gen_local'\]"):
        compare_lm_eval_runs(runs[0], student)


def test_mismatched_documents_are_refused(runs, tmp_path):
    student = _copy(runs[1], tmp_path)
    _rewrite(student, "arc_mc_local", lambda text: "\n".join(text.splitlines()[:-2]))
    with pytest.raises(ValueError, match="different documents .2 doc_ids only in the teacher"):
        compare_lm_eval_runs(runs[0], student)


def test_changed_document_is_refused(runs, tmp_path):
    student = _copy(runs[1], tmp_path)

    def edit(text: str) -> str:
        lines = text.splitlines()
        record = json.loads(lines[0])
        record["doc_hash"] = "0" * 64
        return "\n".join([json.dumps(record), *lines[1:]])

    _rewrite(student, "arc_mc_local", edit)
    with pytest.raises(ValueError, match="doc_hash differs"):
        compare_lm_eval_runs(runs[0], student)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda text: text + "\n{not json", "is not JSON"),
        (lambda text: text + '\n{"x": 1}', "no integer `doc_id`"),
    ],
)
def test_malformed_files_name_file_and_line(runs, tmp_path, edit, message):
    student = _copy(runs[1], tmp_path)
    _rewrite(student, "arc_mc_local", edit)
    with pytest.raises(ValueError, match=message):
        compare_lm_eval_runs(runs[0], student)


def test_folder_without_samples_is_explained(tmp_path):
    with pytest.raises(ValueError, match="--log_samples"):
        compare_lm_eval_runs(tmp_path, tmp_path)
