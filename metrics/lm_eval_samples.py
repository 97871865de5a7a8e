"""Multiple-choice loyalty from two lm-evaluation-harness runs written with ``--log_samples``.

lm-eval writes one ``samples_<task>_<timestamp>.jsonl`` per task under ``--output_path`` (in a
sub-folder named after the model), one record per document: ``doc_id``, ``doc_hash``, ``target``,
``arguments`` (for multiple choice: ``(context, delimiter + choice)`` per choice), ``filtered_resps``
(for multiple choice: one ``[log-likelihood, is_greedy]`` per choice) and the task's metric values.
:func:`compare_lm_eval_runs` matches the teacher's and the student's records on ``doc_id`` (and
checks ``doc_hash``: the same document) and reports per task:

- multiple choice: label loyalty over the chosen answer (argmax log-likelihood, as lm-eval's
  ``acc``), probability loyalty over the softmax of the choice log-likelihoods
  (:func:`~loyalkit.metrics.probability_loyalty_per_example`), flips against the gold answer (Dutta
  et al. 2024) and the doc ids where the two chosen answers differ; where the task reports
  ``acc_norm``, the same over the length-normalised log-likelihoods (divided by the choice's length
  in characters, as lm-eval does; docs with an empty choice are left out of those);
- generative tasks (``generate_until``): exact-match flips only, from each record's ``exact_match``,
  and the share of identical outputs. No label or probability loyalty: there is no shared set of
  answers to compare distributions over.

When the newest run's ``results_*.json`` is beside the samples, the tasks' ``output_type`` and
``target_delimiter`` are read from it; otherwise they are inferred from the records.

Example:
    >>> # lm_eval ... --output_path teacher_run --log_samples; the same for the student, then
    >>> # report = compare_lm_eval_runs("teacher_run", "student_run")
    >>> # report["tasks"]["arc_easy"]["label_loyalty"]
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loyalkit.json_lines import json_lines
from loyalkit.metrics.functional import label_agreement, probability_loyalty_per_example

__all__ = ["TaskSamples", "compare_lm_eval_runs", "lm_eval_report_table", "read_lm_eval_run"]

_SAMPLES = re.compile(r"^samples_(?P<task>.+)_(?P<stamp>\d{4}-\d{2}-\d{2}T[\d.\-]+)\.jsonl$")


@dataclass(frozen=True)
class TaskSamples:
    """One task's records of one run, by ``doc_id``."""

    task: str
    path: Path
    output_type: str
    target_delimiter: str
    records: dict[int, dict[str, Any]]


def _task_configs(directory: Path) -> dict[str, dict[str, Any]]:
    """``configs`` of every ``results_*.json`` under ``directory``, newest last wins."""
    configs: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.rglob("results_*.json"), key=lambda p: p.name):
        try:
            configs.update(json.loads(path.read_text(encoding="utf-8")).get("configs", {}))
        except (json.JSONDecodeError, AttributeError):
            continue  # a results file is optional: the records are the source of truth
    return configs


def _read_records(path: Path) -> dict[int, dict[str, Any]]:
    records: dict[int, dict[str, Any]] = {}
    for number, record in json_lines(path.read_text(encoding="utf-8"), str(path)):
        doc_id = record.get("doc_id") if isinstance(record, dict) else None
        if isinstance(doc_id, bool) or not isinstance(doc_id, int):
            raise ValueError(
                f"{path} line {number} has no integer `doc_id`: is it an lm-eval samples file "
                "(written with --log_samples)?"
            )
        if "filtered_resps" not in record:
            raise ValueError(f"{path} line {number} has no `filtered_resps`")
        if doc_id in records:
            raise ValueError(
                f"{path} holds doc_id {doc_id} twice (repeats or several filters are not supported)"
            )
        records[doc_id] = record
    if not records:
        raise ValueError(f"{path} holds no record")
    return records


def _is_choice_pair(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) == 2


def _infer_output_type(records: dict[int, dict[str, Any]]) -> str:
    first = next(iter(records.values()))["filtered_resps"]
    if isinstance(first, list) and first and all(_is_choice_pair(v) for v in first):
        return "multiple_choice"
    return "generate_until"


def read_lm_eval_run(directory: str | Path) -> dict[str, TaskSamples]:
    """Every task's samples under ``directory`` (searched recursively); the newest file per task."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"lm-eval output folder {str(directory)!r} does not exist")
    newest: dict[str, tuple[str, Path]] = {}
    for path in directory.rglob("samples_*.jsonl"):
        match = _SAMPLES.match(path.name)
        if match is None:
            continue
        task, stamp = match["task"], match["stamp"]
        if task not in newest or stamp > newest[task][0]:
            newest[task] = (stamp, path)
    if not newest:
        raise ValueError(
            f"no samples_<task>_<timestamp>.jsonl under {str(directory)!r}: run lm_eval with "
            "--output_path DIR --log_samples"
        )
    configs = _task_configs(directory)
    runs = {}
    for task, (_, path) in sorted(newest.items()):
        records = _read_records(path)
        config = configs.get(task, {})
        runs[task] = TaskSamples(
            task,
            path,
            str(config.get("output_type") or _infer_output_type(records)),
            str(config.get("target_delimiter", " ")),
            records,
        )
    return runs


def _log_likelihoods(task: TaskSamples, doc_id: int) -> np.ndarray:
    responses = task.records[doc_id]["filtered_resps"]
    if not isinstance(responses, list) or not all(_is_choice_pair(r) for r in responses):
        raise ValueError(
            f"{task.path}: doc_id {doc_id} is not a multiple-choice record (expected one "
            "[log-likelihood, is_greedy] pair per choice in `filtered_resps`)"
        )
    try:
        return np.array([float(r[0]) for r in responses])
    except (TypeError, ValueError):
        raise ValueError(f"{task.path}: doc_id {doc_id} has a non-numeric log-likelihood") from None


def _choice_lengths(task: TaskSamples, doc_id: int, count: int) -> np.ndarray | None:
    """Each choice's length in characters (lm-eval's acc_norm divisor), from ``arguments``."""
    arguments = task.records[doc_id].get("arguments")
    if not isinstance(arguments, dict) or len(arguments) != count:
        return None
    lengths = []
    for key in sorted(arguments, key=lambda k: int(k.rsplit("_", 1)[-1])):
        continuation = arguments[key].get("arg_1") if isinstance(arguments[key], dict) else None
        if not isinstance(continuation, str):
            return None
        lengths.append(len(continuation.removeprefix(task.target_delimiter)))
    return np.array(lengths, dtype=np.float64)


def _gold(task: TaskSamples, doc_id: int, count: int) -> int | None:
    target = task.records[doc_id].get("target")
    try:
        gold = int(target)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return gold if 0 <= gold < count else None


def _loyalty_over(
    teacher: list[np.ndarray], student: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per doc: agreement, probability loyalty, teacher's and student's choice (grouped by size)."""
    n = len(teacher)
    agree, loyal = np.zeros(n, dtype=bool), np.zeros(n)
    teacher_choice = np.array([int(np.argmax(t)) for t in teacher])
    student_choice = np.array([int(np.argmax(s)) for s in student])
    sizes = np.array([len(t) for t in teacher])
    for size in np.unique(sizes):
        rows = np.flatnonzero(sizes == size)
        t = np.stack([teacher[i] for i in rows])
        s = np.stack([student[i] for i in rows])
        if size == 1:
            agree[rows], loyal[rows] = True, 1.0
            continue
        agree[rows] = label_agreement(s, t)
        loyal[rows] = probability_loyalty_per_example(s, t, input_type="logits")
    return agree, loyal, teacher_choice, student_choice


def _flip_summary(teacher_correct: np.ndarray, student_correct: np.ndarray) -> dict[str, float]:
    lost = float((teacher_correct & ~student_correct).mean())
    gained = float((~teacher_correct & student_correct).mean())
    return {
        "teacher_accuracy": float(teacher_correct.mean()),
        "student_accuracy": float(student_correct.mean()),
        "flips": lost + gained,
        "flips_correct_to_incorrect": lost,
        "flips_incorrect_to_correct": gained,
    }


def _multiple_choice(teacher: TaskSamples, student: TaskSamples, ids: list[int]) -> dict[str, Any]:
    t_ll = [_log_likelihoods(teacher, i) for i in ids]
    s_ll = [_log_likelihoods(student, i) for i in ids]
    for doc_id, t, s in zip(ids, t_ll, s_ll, strict=True):
        if len(t) != len(s):
            raise ValueError(
                f"task {teacher.task!r}, doc_id {doc_id}: the teacher scored {len(t)} choices, "
                f"the student {len(s)}"
            )
    agree, loyal, t_choice, s_choice = _loyalty_over(t_ll, s_ll)
    gold = np.array([_gold(teacher, i, len(t)) for i, t in zip(ids, t_ll, strict=True)])
    known = np.array([g is not None for g in gold])
    result: dict[str, Any] = {
        "output_type": "multiple_choice",
        "num_docs": len(ids),
        "label_loyalty": float(agree.mean()),
        "probability_loyalty": float(loyal.mean()),
    }
    if known.any():
        gold_known = gold[known].astype(np.int64)
        result.update(_flip_summary(t_choice[known] == gold_known, s_choice[known] == gold_known))
    result["disagreeing_docs"] = [ids[i] for i in np.flatnonzero(~agree)]
    if all("acc_norm" in teacher.records[i] for i in ids):
        result.update(_normalised(teacher, ids, t_ll, s_ll, gold))
    return result


def _normalised(
    teacher: TaskSamples,
    ids: list[int],
    t_ll: list[np.ndarray],
    s_ll: list[np.ndarray],
    gold: np.ndarray,
) -> dict[str, Any]:
    lengths = [_choice_lengths(teacher, i, len(t)) for i, t in zip(ids, t_ll, strict=True)]
    usable = [k for k, n in enumerate(lengths) if n is not None and (n > 0).all()]
    if not usable:
        return {"num_docs_norm": 0}
    t_norm = [t_ll[k] / lengths[k] for k in usable]
    s_norm = [s_ll[k] / lengths[k] for k in usable]
    agree, loyal, t_choice, s_choice = _loyalty_over(t_norm, s_norm)
    result: dict[str, Any] = {
        "num_docs_norm": len(usable),
        "label_loyalty_norm": float(agree.mean()),
        "probability_loyalty_norm": float(loyal.mean()),
    }
    gold_usable = gold[usable]
    known = np.array([g is not None for g in gold_usable])
    if known.any():
        g = gold_usable[known].astype(np.int64)
        flips = _flip_summary(t_choice[known] == g, s_choice[known] == g)
        result.update({f"{name}_norm": value for name, value in flips.items()})
    return result


def _generative(teacher: TaskSamples, student: TaskSamples, ids: list[int]) -> dict[str, Any]:
    def correct(task: TaskSamples) -> np.ndarray:
        values = [task.records[i].get("exact_match") for i in ids]
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
            raise ValueError(
                f"{task.path}: generative task {task.task!r} has records without a numeric "
                "`exact_match`: only exact-match flips are supported for generative tasks"
            )
        return np.array(values, dtype=np.float64) > 0

    t_correct, s_correct = correct(teacher), correct(student)
    same = [
        teacher.records[i]["filtered_resps"] == student.records[i]["filtered_resps"] for i in ids
    ]
    return {
        "output_type": teacher.output_type,
        "num_docs": len(ids),
        "note": "generative task: exact-match flips only (no label or probability loyalty)",
        **_flip_summary(t_correct, s_correct),
        "identical_outputs": float(np.mean(same)),
        "disagreeing_docs": [
            i for i, t, s in zip(ids, t_correct, s_correct, strict=True) if t != s
        ],
    }


def _matched_ids(teacher: TaskSamples, student: TaskSamples) -> list[int]:
    t_ids, s_ids = set(teacher.records), set(student.records)
    if t_ids != s_ids:
        only_t, only_s = sorted(t_ids - s_ids), sorted(s_ids - t_ids)
        raise ValueError(
            f"task {teacher.task!r}: the runs scored different documents ({len(only_t)} doc_ids "
            f"only in the teacher's run, e.g. {only_t[:5]}; {len(only_s)} only in the student's, "
            f"e.g. {only_s[:5]}): run both with the same --limit and task version"
        )
    ids = sorted(t_ids)
    for doc_id in ids:
        t_hash = teacher.records[doc_id].get("doc_hash")
        s_hash = student.records[doc_id].get("doc_hash")
        if t_hash is not None and s_hash is not None and t_hash != s_hash:
            raise ValueError(
                f"task {teacher.task!r}, doc_id {doc_id}: the runs saw different documents "
                "(doc_hash differs): the task's data changed between the runs"
            )
    return ids


def compare_lm_eval_runs(teacher_dir: str | Path, student_dir: str | Path) -> dict[str, Any]:
    """Per-task loyalty of the student's lm-eval run to the teacher's (see the module docstring)."""
    teacher_run, student_run = read_lm_eval_run(teacher_dir), read_lm_eval_run(student_dir)
    if set(teacher_run) != set(student_run):
        raise ValueError(
            "the runs hold different tasks: only in the teacher's "
            f"{sorted(set(teacher_run) - set(student_run))}, only in the student's "
            f"{sorted(set(student_run) - set(teacher_run))}"
        )
    tasks = {}
    for name, teacher in teacher_run.items():
        student = student_run[name]
        if teacher.output_type != student.output_type:
            raise ValueError(
                f"task {name!r} is {teacher.output_type} in the teacher's run but "
                f"{student.output_type} in the student's"
            )
        ids = _matched_ids(teacher, student)
        if teacher.output_type == "multiple_choice":
            tasks[name] = _multiple_choice(teacher, student, ids)
        else:
            tasks[name] = _generative(teacher, student, ids)
        tasks[name]["teacher_file"], tasks[name]["student_file"] = (
            str(teacher.path),
            str(student.path),
        )
    return {"teacher_dir": str(teacher_dir), "student_dir": str(student_dir), "tasks": tasks}


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return "" if value is None else str(value)


def lm_eval_report_table(report: dict[str, Any]) -> str:
    """One markdown row per task (``_norm`` rows for length-normalised multiple choice)."""
    columns = (
        "docs",
        "teacher_accuracy",
        "student_accuracy",
        "label_loyalty",
        "probability_loyalty",
        "flips",
    )
    lines = [
        "| task | " + " | ".join(c.replace("_", " ") for c in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for name, task in report["tasks"].items():
        values = [task["num_docs"], *(task.get(c) for c in columns[1:])]
        lines.append(f"| {name} | " + " | ".join(_cell(v) for v in values) + " |")
        if task.get("num_docs_norm"):
            values = [task["num_docs_norm"], *(task.get(f"{c}_norm") for c in columns[1:])]
            lines.append(f"| {name} (acc_norm) | " + " | ".join(_cell(v) for v in values) + " |")
    generative = [n for n, t in report["tasks"].items() if t["output_type"] != "multiple_choice"]
    if generative:
        lines.append("")
        lines.append(f"Generative tasks ({', '.join(generative)}): exact-match flips only.")
    return "\n".join(lines)
