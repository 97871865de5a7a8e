"""Real check: multiple-choice loyalty of the compressed SmolLM2-135M-Instruct students via lm-eval.

Local lm-evaluation-harness tasks (no dataset hub) over subsets of ``../shared/data``: ARC-Easy and
ARC-Challenge (the official dev split, in the shared ``test/`` folders), MMLU (test rows, two per
subject in file order) and HellaSwag (validation); each model (teacher and the four students of
``smollm2_lm_loyalty.py``) goes through ``lm_eval.simple_evaluate`` with ``log_samples`` and the
harness's own ``EvaluationTracker`` writes ``samples_<task>_*.jsonl`` as ``lm_eval --log_samples``
does; then ``loyalkit compare lm-eval`` logic (:func:`compare_lm_eval_runs`) compares each student's
run with the teacher's.

    .venv/bin/python benchmarks/smollm2_lm_eval.py --docs 60 --output-dir /tmp/smollm2_lm_eval
"""

from __future__ import annotations

import argparse
import bz2
import csv
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "benchmarks"))

from lm_eval_tasks import ARC_DIR, multiple_choice_yaml, read_arc  # noqa: E402
from smollm2_lm_loyalty import drop_layers  # noqa: E402
from smollm2_model import smollm2_folder  # noqa: E402

from loyalkit.compression.causal_lm_loading import StudentCompression, student_from_teacher  # noqa: E402
from loyalkit.metrics.lm_eval_samples import compare_lm_eval_runs  # noqa: E402


def _mmlu(count: int) -> list[dict]:
    rows = []
    for path in sorted((DATA / "mmlu" / "test").glob("*_test.csv")):
        with path.open(encoding="utf-8") as handle:
            for question, a, b, c, d, answer in list(csv.reader(handle))[:2]:
                prompt = f"{question}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer:"
                rows.append({"prompt": prompt, "label": "ABCD".index(answer)})
    return rows[:count]


def _hellaswag(count: int) -> list[dict]:
    with bz2.open(DATA / "hellaswag" / "hellaswag_val_full.txt.bz2", "rt") as handle:
        lines = handle.read().splitlines()
    rows = []
    for start in range(0, 6 * count, 6):
        context, gold, *endings = lines[start : start + 6]
        rows.append({"ctx": context, "endings": endings, "label": int(gold)})
    return rows


def write_tasks(folder: Path, docs: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    tasks = {
        "arc_easy_local": (
            read_arc(ARC_DIR / "ARC-E" / "test" / "arc_easy_test.csv", docs),
            "Question: {{question}}\\nAnswer:",
            "{{choices}}",
        ),
        "arc_challenge_local": (
            read_arc(ARC_DIR / "ARC-C" / "test" / "arc_challenge_test.csv", docs),
            "Question: {{question}}\\nAnswer:",
            "{{choices}}",
        ),
        "mmlu_local": (_mmlu(docs), "{{prompt}}", "{{['A', 'B', 'C', 'D']}}"),
        "hellaswag_local": (_hellaswag(docs // 2), "{{ctx}}", "{{endings}}"),
    }
    for task, (rows, text, choices) in tasks.items():
        data = folder / f"{task}.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        yaml = multiple_choice_yaml(task, data, text, choices)
        (folder / f"{task}.yaml").write_text(yaml, encoding="utf-8")
    return list(tasks)


def run_lm_eval(model, tokenizer, tasks: list[str], task_dir: Path, output: Path) -> None:
    from lm_eval import simple_evaluate
    from lm_eval.loggers import EvaluationTracker
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    tracker = EvaluationTracker(output_path=str(output))
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=8, device="cpu")
    results = simple_evaluate(
        model=lm,
        tasks=tasks,
        task_manager=TaskManager(include_path=str(task_dir)),
        log_samples=True,
        evaluation_tracker=tracker,
    )
    assert results is not None
    samples = results.pop("samples")
    tracker.save_results_aggregated(results=results, samples=samples)
    for task in results["configs"]:
        tracker.save_results_samples(task_name=task, samples=samples[task])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=60, help="docs per task (HellaSwag: half)")
    parser.add_argument("--output-dir", default="/tmp/smollm2_lm_eval")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "smollm2_lm_eval.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(args.output_dir)
    tasks = write_tasks(out / "tasks", args.docs)
    folder = smollm2_folder()
    teacher = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    students = {
        "int8 dynamic (torchao)": lambda: student_from_teacher(
            teacher, StudentCompression(quantize="int8")
        )[0],
        "int4 weight-only (torchao)": lambda: student_from_teacher(
            teacher, StudentCompression(quantize="int4-weight-only")
        )[0],
        "50% magnitude pruning": lambda: student_from_teacher(
            teacher, StudentCompression(prune=0.5)
        )[0],
        "two layers dropped": lambda: drop_layers(teacher, (26, 27))[0],
    }
    run_lm_eval(teacher, tokenizer, tasks, out / "tasks", out / "teacher")
    report = {"docs": args.docs, "students": {}}
    for index, (name, build) in enumerate(students.items()):
        run_dir = out / f"student{index}"
        run_lm_eval(build(), tokenizer, tasks, out / "tasks", run_dir)
        report["students"][name] = compare_lm_eval_runs(out / "teacher", run_dir)["tasks"]
        print(name, json.dumps(report["students"][name])[:400], flush=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(report))


def table(report: dict) -> str:
    lines = [
        "| student | task | docs | teacher acc | student acc | label loyalty | prob. loyalty "
        "| flips |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, tasks in report["students"].items():
        for task, r in tasks.items():
            lines.append(
                f"| {name} | {task} | {r['num_docs']} | {r['teacher_accuracy']:.3f} | "
                f"{r['student_accuracy']:.3f} | {r['label_loyalty']:.3f} | "
                f"{r['probability_loyalty']:.3f} | {r['flips']:.3f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
