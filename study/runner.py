"""Run the study: the teacher first, then every (method, seed), resumably; then the report.

Layout of ``config.output_dir``::

    study.log                      the log of every run of the command
    results.json                   rewritten after every run (schema: INTERFACES.md section D)
    results.md, *.png              the report (``loyalkit.study.report.write_report``)
    teacher/                       the fine-tuned teacher (model, tokenizer, done.json, attack.json)
    methods/<method>/seed-<s>/     model/ (the student), done.json or failed.json, attack.json
    attack-resources/              TextAttack's offline stop words, when not prepared elsewhere

A run is finished when its ``done.json`` exists (written last, by atomic rename) and records the
same settings: a rerun skips it and redoes runs that were interrupted, that failed, or whose
settings changed. An exception in one run is caught, recorded (status ``"failed"`` with its
traceback) and the study goes on. Latency is measured at the end, for the teacher and every
finished run together, in the same process (so the speed-ups compare like with like).

Under ``accelerate launch`` every process runs this function: the training runs in the Trainer on
all processes; loading, measuring, attacking and writing happen on the main process while the
others wait at a barrier.

Example::

    from loyalkit.study.config import preset
    from loyalkit.study.runner import run_study
    results = run_study(preset("quick").select(output_dir=Path("quick-study")))
    print(results["runs"][0]["label_loyalty"])
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import shutil
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from loyalkit.robustness.isolated import AttackWorker
from loyalkit.study import methods as study_methods
from loyalkit.study.attacks import attack, teacher_attack
from loyalkit.study.config import RunSpec, StudyConfig
from loyalkit.study.measure import (
    classification_metrics,
    count_parameters,
    latency_batch,
    load_student,
    predict_logits,
    size_on_disk_mb,
    time_models,
)
from loyalkit.study.state import fingerprint, read_json, write_json
from loyalkit.study.task_data import TaskData, load_task
from loyalkit.study.teacher import prepare_teacher

__all__ = ["run_study"]

logger = logging.getLogger("loyalkit.study")

_LOGGERS = ("loyalkit",)


@contextlib.contextmanager
def _log_to(path: Path, enabled: bool) -> Iterator[None]:
    """Send loyalkit's and the Trainer's log records to ``path`` while the study runs."""
    if not enabled:
        yield
        return
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    saved = []
    for name in _LOGGERS:
        target = logging.getLogger(name)
        saved.append((target, target.level))
        if target.getEffectiveLevel() > logging.INFO:
            target.setLevel(logging.INFO)
        target.addHandler(handler)
    try:
        yield
    finally:
        for target, level in saved:
            target.removeHandler(handler)
            target.setLevel(level)
        handler.close()


@contextlib.contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    import torch

    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------- one run


def _run_key(config: StudyConfig, spec: RunSpec, seed: int, teacher_fp: str) -> str:
    data = config.to_dict()
    return fingerprint(
        {
            "teacher": teacher_fp,
            "method": spec.method,
            "settings": data["methods"][spec.family],
            "seed": seed,
            "attack": data["attack"] if config.attack.enabled else None,
            "measure": data["measure"],
        }
    )


def _measure_run(
    spec: RunSpec,
    seed: int,
    folder: Path,
    output: Path,
    context: dict[str, Any],
    config: StudyConfig,
) -> dict[str, Any]:
    """Reload the saved student and measure it against the teacher."""
    model_dir = folder / "model"
    student = load_student(model_dir)
    logits = predict_logits(
        student, context["validation"], context["collator"], config.measure.eval_batch_size
    )
    record: dict[str, Any] = {
        "model_dir": model_dir.relative_to(output).as_posix(),
        "layers": int(student.config.num_hidden_layers),
        "parameters": count_parameters(student),
        "size_on_disk_mb": size_on_disk_mb(model_dir),
        **classification_metrics(logits, context["teacher_logits"], context["labels"]),
        "attack": None,
        "adversarial_loyalty": None,
    }
    logger.info("%s seed %d: measured, accuracy %.4f", spec.method, seed, record["accuracy"])
    if config.attack.enabled:
        started = time.perf_counter()
        report = attack(
            student,
            context["tokenizer"],
            context["task"],
            config,
            folder / "attack.json",
            spec.method,
            context["progress"],
            context["attack_worker"],
        )
        record["attack"] = dict(report.summary)
        from loyalkit.robustness import adversarial_loyalty

        record["adversarial_loyalty"] = adversarial_loyalty(
            context["teacher_attack"], student, context["tokenizer"], config.attack.batch_size
        )
        logger.info(
            "%s seed %d: attacked in %.1f s", spec.method, seed, time.perf_counter() - started
        )
    return record


def _empty_run(spec: RunSpec, seed: int) -> dict[str, Any]:
    return {
        "method": spec.method,
        "title": spec.title,
        "seed": seed,
        "status": "failed",
        "error": None,
        "model_dir": None,
        "layers": None,
        "parameters": None,
        "size_on_disk_mb": None,
        "latency_ms": None,
        "speedup": None,
        "train_seconds": None,
        "accuracy": None,
        "label_loyalty": None,
        "probability_loyalty": None,
        "flips": None,
        "kl_divergence": None,
        "attack": None,
        "adversarial_loyalty": None,
    }


def _do_run(
    spec: RunSpec,
    seed: int,
    folder: Path,
    key: str,
    config: StudyConfig,
    context: dict[str, Any],
    state: Any,
) -> dict[str, Any]:
    from transformers import set_seed

    record = _empty_run(spec, seed)
    if state.is_main_process and folder.exists():
        shutil.rmtree(folder)  # an interrupted or failed run, or changed settings: start afresh
    state.wait_for_everyone()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        set_seed(seed)
        started = time.perf_counter()
        # Looked up at call time, so a method can be replaced (tests, plug-ins).
        function = study_methods.METHODS[spec.family]
        function(context["method_context"], spec, seed, folder / "model")
        record["train_seconds"] = time.perf_counter() - started
        state.wait_for_everyone()
        if state.is_main_process:
            record.update(_measure_run(spec, seed, folder, config.output_dir, context, config))
            record["status"] = "done"
    except Exception:
        record["error"] = traceback.format_exc()
        logger.error("%s seed %d failed:\n%s", spec.method, seed, record["error"])
    if state.is_main_process:
        shutil.rmtree(folder / "trainer", ignore_errors=True)
        name = "done.json" if record["status"] == "done" else "failed.json"
        write_json(folder / name, {"fingerprint": key, "run": record})
    state.wait_for_everyone()
    if not state.is_main_process:  # the main process measured: every process gets its record
        written = read_json(folder / "done.json") or read_json(folder / "failed.json")
        if isinstance(written, dict):
            record = written["run"]
    return record


# ---------------------------------------------------------------- the study


def _task_record(task: TaskData) -> dict[str, Any]:
    return {
        "name": task.name,
        "num_labels": task.num_labels,
        "label_names": list(task.label_names),
        "train_size": len(task.train),
        "validation_size": len(task.validation),
        "text_columns": list(task.text_columns),
    }


def _environment(processes: int) -> dict[str, Any]:
    """What the numbers depend on: versions, CPU count, torch threads, training processes."""
    import platform

    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processes": processes,
        "platform": platform.platform(),
    }


def _results(
    config: StudyConfig,
    task: TaskData,
    teacher: dict[str, Any],
    runs: list[dict[str, Any]],
    processes: int = 1,
) -> dict[str, Any]:
    import loyalkit
    from loyalkit.study.report import summarize

    return {
        "loyalkit_version": loyalkit.__version__,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": _environment(processes),
        "config": config.to_dict(),
        "task": _task_record(task),
        "teacher": teacher,
        "runs": runs,
        "summary": summarize(runs),
    }


def _time_all(
    config: StudyConfig,
    output: Path,
    teacher: dict[str, Any],
    runs: list[dict[str, Any]],
    batch: Any,
) -> None:
    """Latency of the teacher and every finished run, round-robin, and each run's speed-up."""
    models = {"teacher": load_student(output / teacher["model_dir"])}
    for index, run in enumerate(runs):
        if run["status"] == "done":
            models[str(index)] = load_student(output / run["model_dir"])
    measure = config.measure
    logger.info("timing %d models (%d threads)", len(models), measure.latency_threads)
    latency = time_models(
        models,
        batch,
        threads=measure.latency_threads,
        warmup=measure.latency_warmup,
        repeats=measure.latency_repeats,
    )
    teacher["latency_ms"] = latency["teacher"]
    for index, run in enumerate(runs):
        if str(index) in latency:
            run["latency_ms"] = latency[str(index)]
            run["speedup"] = latency["teacher"] / latency[str(index)]


def run_study(config: StudyConfig, *, progress: bool = True) -> dict[str, Any]:
    """Run every enabled method for every seed; return (and write) the results.

    Finished runs in ``config.output_dir`` are reused (see the module docstring). ``progress``
    shows progress bars.
    """
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm
    from transformers import DataCollatorWithPadding

    if not isinstance(config, StudyConfig):
        raise TypeError(f"`config` must be a StudyConfig, got {type(config).__name__}")
    config.check()
    state = PartialState(cpu=not torch.cuda.is_available())
    output = Path(config.output_dir)
    if state.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    # One TextAttack worker for the whole study (started at the first attack, main process only).
    worker = AttackWorker()
    with (
        _log_to(output / "study.log", state.is_main_process),
        _torch_threads(config.threads),
        contextlib.closing(worker),
    ):
        logger.info("study: %s", json.dumps(config.to_dict()))
        if state.is_main_process:
            for warning in config.check_runnable():
                logger.warning("study: %s", warning)
        task = load_task(config.task, seed=config.teacher.seed)
        folder = output / "teacher"
        teacher, tokenizer, train, validation, teacher_done = prepare_teacher(
            config, task, folder, state, progress and state.is_main_process
        )
        collator = DataCollatorWithPadding(tokenizer)
        context: dict[str, Any] = {
            "attack_worker": worker,
            "progress": progress and state.is_main_process,
            "task": task,
            "tokenizer": tokenizer,
            "validation": validation,
            "collator": collator,
            "labels": np.asarray(validation["labels"]),
            "method_context": study_methods.MethodContext(
                teacher=teacher,
                teacher_dir=folder,
                tokenizer=tokenizer,
                train=train,
                collator=collator,
                is_main_process=state.is_main_process,
                num_processes=state.num_processes,
                extra_callbacks=(study_methods.training_log_callback(),),
                progress=progress,
            ),
        }
        teacher_logits = predict_logits(
            teacher, validation, collator, config.measure.eval_batch_size
        )
        context["teacher_logits"] = teacher_logits
        teacher_record: dict[str, Any] = {
            "model_dir": "teacher",
            "model": config.teacher.model,
            "fine_tuned": bool(teacher_done.get("fine_tuned")) if teacher_done else False,
            "train_seconds": teacher_done.get("train_seconds") if teacher_done else None,
            "layers": int(teacher.config.num_hidden_layers),
            "parameters": count_parameters(teacher),
            "size_on_disk_mb": size_on_disk_mb(folder),
            "latency_ms": None,
            "accuracy": classification_metrics(teacher_logits, teacher_logits, context["labels"])[
                "accuracy"
            ],
            "attack": None,
        }
        if state.is_main_process:
            context["teacher_attack"] = teacher_attack(
                config, teacher, tokenizer, task, folder, progress, context["attack_worker"]
            )
            if context["teacher_attack"] is not None:
                teacher_record["attack"] = dict(context["teacher_attack"].summary)
        state.wait_for_everyone()
        teacher_fp = str(teacher_done.get("fingerprint")) if teacher_done else ""

        runs: list[dict[str, Any]] = []
        plan = [(spec, seed) for spec in config.runs() for seed in config.seeds]
        bar = tqdm(plan, desc="study", unit="run", disable=not (progress and state.is_main_process))
        for spec, seed in bar:
            bar.set_postfix_str(f"{spec.method} seed {seed}")
            run_folder = output / "methods" / spec.method / f"seed-{seed}"
            key = _run_key(config, spec, seed, teacher_fp)
            done = read_json(run_folder / "done.json")
            if isinstance(done, dict) and done.get("fingerprint") == key:
                logger.info("%s seed %d: finished before, skipped", spec.method, seed)
                record = done["run"]
            else:
                logger.info("%s seed %d: running", spec.method, seed)
                record = _do_run(spec, seed, run_folder, key, config, context, state)
            runs.append(record)
            if state.is_main_process:
                write_json(
                    output / "results.json",
                    _results(config, task, teacher_record, runs, state.num_processes),
                )
        bar.close()

        results = _results(config, task, teacher_record, runs, state.num_processes)
        if state.is_main_process:
            batch = latency_batch(validation, collator, config.measure.latency_batch_size)
            _time_all(config, output, teacher_record, runs, batch)
            results = _results(config, task, teacher_record, runs, state.num_processes)
            write_json(output / "results.json", results)
            from loyalkit.study.report import write_report

            written = write_report(results, output)
            logger.info("report: %s", ", ".join(str(p) for p in written))
        state.wait_for_everyone()
        if not state.is_main_process:
            results = read_json(output / "results.json")
    return results
