"""Run the study: the teacher first, then every (method, seed), resumably; then the report.

Layout of ``config.output_dir``::

    study.log                      the log of every run of the command
    results.json                   rewritten after every run (``loyalkit.study.records.StudyResults``)
    results.md, *.png              the report (``loyalkit.study.report.write_report``)
    teacher/                       the fine-tuned teacher (model, tokenizer, done.json, attack.json,
                                   timing.json: its latency in the latest timing session)
    methods/<method>/seed-<s>/     model/ (the student), done.json or failed.json, attack.json
    attack-resources/              TextAttack's offline stop words, when not prepared elsewhere

A run is finished when its ``done.json`` exists (written last, by atomic rename) and records the
same settings: a rerun skips it and redoes runs that were interrupted, that failed, or whose
settings changed. An exception in one run is caught, recorded (status ``"failed"`` with its
traceback) and the study goes on.

Latency is measured once per finished run, at the end of the command that finished it: the runs
not timed yet are timed together with the teacher, round-robin in one session
(``loyalkit.study.timing``), and each run's latency, speed-up (over the teacher's latency of the
same session) and the session's load average are written into its ``done.json``; the teacher's
latest session goes into ``teacher/timing.json``. A rerun does not time them again, so a finished
run's speed-up does not change with the load of the machine at each rerun; ``retime=True``
(``loyalkit study run --retime``) re-times every finished run in one new session.

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
from loyalkit.study.lock import study_lock
from loyalkit.study.measure import (
    classification_metrics,
    count_parameters,
    latency_batch,
    load_student,
    predict_logits,
    size_on_disk_mb,
)
from loyalkit.study.records import RunRecord, StudyResults, TeacherRecord
from loyalkit.study.state import (
    FINGERPRINT_VERSION,
    TEACHER_TIMING,
    changed_files,
    file_digests,
    fingerprint,
    read_json,
    write_json,
)
from loyalkit.study.task_data import TaskData, load_task
from loyalkit.study.teacher import check_teacher_quality, prepare_teacher, task_inputs
from loyalkit.study.timing import TEACHER, time_session

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


def _run_key(
    config: StudyConfig, spec: RunSpec, seed: int, teacher_fp: str, inputs: dict[str, Any]
) -> str:
    """A run's fingerprint: the teacher's (its weights' hashes), the content of the task's files
    (``inputs``, from ``task_inputs``), the method's settings, the seed and what is measured."""
    data = config.to_dict()
    return fingerprint(
        {
            "version": FINGERPRINT_VERSION,
            "teacher": teacher_fp,
            "task": inputs,
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
    return RunRecord(method=spec.method, title=spec.title, seed=seed).to_dict()


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
        spec.settings.build(context["method_context"], spec, seed, folder / "model")
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
        written: dict[str, Any] = {"fingerprint": key, "run": record}
        if record["status"] == "done":
            written["files"] = file_digests(folder / "model")
        write_json(folder / name, written)
    state.wait_for_everyone()
    if not state.is_main_process:  # the main process measured: every process gets its record
        saved = read_json(folder / "done.json") or read_json(folder / "failed.json")
        if isinstance(saved, dict):
            record = saved["run"]
    return record


# ---------------------------------------------------------------- the study


def _reusable(done: Any, key: str, folder: Path, spec: RunSpec, seed: int) -> bool:
    """Whether a finished run matches ``key`` and its model files are those it was measured with."""
    if not isinstance(done, dict) or done.get("fingerprint") != key:
        return False
    changed = changed_files(folder / "model", done.get("files"))
    if changed:
        logger.warning(
            "%s seed %d: the saved model changed since it was measured (%s); redoing the run",
            spec.method,
            seed,
            ", ".join(changed[:5]),
        )
        return False
    return True


def _split_names(config: StudyConfig) -> dict[str, str]:
    """What each split was read from, in words: a file name, or a dataset and its split."""
    task = config.task
    if task.train_file is not None and task.validation_file is not None:
        return {"train_data": task.train_file.name, "validation_data": task.validation_file.name}
    if task.dataset is not None:
        name = task.dataset + (f"/{task.dataset_config}" if task.dataset_config else "")
        return {
            "train_data": f"{name} ({task.train_split} split)",
            "validation_data": f"{name} ({task.validation_split} split)",
        }
    return {
        "train_data": "the bundled sentiment example (train split)",
        "validation_data": "the bundled sentiment example (test split)",
    }


def _task_record(task: TaskData, config: StudyConfig | None = None) -> dict[str, Any]:
    return {
        **(_split_names(config) if config is not None else {}),
        "name": task.name,
        "num_labels": task.num_labels,
        "label_names": list(task.label_names),
        "train_size": len(task.train),
        "validation_size": len(task.validation),
        "text_columns": list(task.text_columns),
    }


def _cpu_model() -> str:
    """The CPU's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as file:
            for line in file:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    names = ("loyalkit", "torch", "transformers", "accelerate", "datasets", "evaluate", "numpy",
             "scipy", "torchao", "textattack", "tokenizers", "safetensors")  # fmt: skip
    found: dict[str, str | None] = {}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def _environment(processes: int) -> dict[str, Any]:
    """What the numbers depend on: library versions, CPU model and count, torch threads, load
    average while the study ran, training processes. Training results are identical for the same
    config, seeds and thread count; another thread count can change the last digits."""
    import platform

    import torch
    import transformers

    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "versions": _versions(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load,
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

    # Through the records: a key written here but not declared there is an error.
    return StudyResults(
        loyalkit_version=loyalkit.__version__,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        environment=_environment(processes),
        config=config.to_dict(),
        task=_task_record(task, config),
        teacher=TeacherRecord.from_dict(teacher),
        runs=[RunRecord.from_dict(run) for run in runs],
        summary=summarize(runs),
    ).to_dict()


def _needs_timing(run: dict[str, Any], retime: bool) -> bool:
    """A finished run is timed once: when it has no timing record yet, or on request."""
    return run["status"] == "done" and (retime or run.get("timing") is None)


def _time_session(
    config: StudyConfig,
    output: Path,
    teacher: dict[str, Any],
    pending: list[tuple[dict[str, Any], Path]],
    batch: Any,
) -> None:
    """Time the teacher and the ``pending`` runs (record, folder) round-robin in one session;
    store each run's latency, speed-up and timing in its record and its ``done.json``, and the
    teacher's in ``teacher/timing.json``."""
    models = {TEACHER: load_student(output / teacher["model_dir"])}
    for index, (run, _) in enumerate(pending):
        try:
            models[str(index)] = load_student(output / run["model_dir"])
        except Exception as error:  # a model damaged after it was measured: not timed
            logger.error(
                "%s seed %s: cannot be loaded for timing: %s", run["method"], run["seed"], error
            )
    logger.info(
        "timing %d models with the teacher (%d threads)",
        len(models) - 1,
        config.measure.latency_threads,
    )
    latency, timing = time_session(models, batch, config.measure)
    logger.info(
        "timing: 1-min load average %s before, %s after", timing.load_before, timing.load_after
    )
    teacher["latency_ms"] = latency[TEACHER]
    teacher["timing"] = timing.to_dict()
    # Beside the teacher's done.json, which stays the record of its training.
    write_json(
        output / teacher["model_dir"] / TEACHER_TIMING,
        {"latency_ms": teacher["latency_ms"], "timing": teacher["timing"]},
    )
    for index, (run, folder) in enumerate(pending):
        if str(index) not in latency:
            continue
        run["latency_ms"] = latency[str(index)]
        run["speedup"] = latency[TEACHER] / latency[str(index)]
        run["timing"] = timing.to_dict()
        saved = read_json(folder / "done.json")
        if isinstance(saved, dict):  # the run's record, timed: stored with it
            write_json(folder / "done.json", {**saved, "run": run})


def run_study(
    config: StudyConfig, *, progress: bool = True, retime: bool = False
) -> dict[str, Any]:
    """Run every enabled method for every seed; return (and write) the results.

    Finished runs in ``config.output_dir`` are reused (see the module docstring), their latency
    too. ``retime`` times every finished run again, with the teacher, in one session, and
    replaces their stored latency, speed-up and load. ``progress`` shows progress bars.
    """
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm
    from transformers import DataCollatorWithPadding

    if not isinstance(config, StudyConfig):
        raise TypeError(f"`config` must be a StudyConfig, got {type(config).__name__}")
    if not isinstance(retime, bool):
        raise TypeError(f"`retime` must be True or False, got {retime!r}")
    config.check()
    state = PartialState(cpu=not torch.cuda.is_available())
    output = Path(config.output_dir)
    if state.is_main_process:
        output.mkdir(parents=True, exist_ok=True)
    state.wait_for_everyone()
    lock = study_lock(output) if state.is_main_process else contextlib.nullcontext()
    # One TextAttack worker for the whole study (started at the first attack, main process only).
    worker = AttackWorker()
    with (
        lock,
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
        teacher_timing = read_json(folder / TEACHER_TIMING) if teacher_done else None
        if not isinstance(teacher_timing, dict):
            teacher_timing = {}
        teacher_record: dict[str, Any] = {
            "model_dir": "teacher",
            "model": config.teacher.model,
            "fine_tuned": bool(teacher_done.get("fine_tuned")) if teacher_done else False,
            "train_seconds": teacher_done.get("train_seconds") if teacher_done else None,
            "layers": int(teacher.config.num_hidden_layers),
            "parameters": count_parameters(teacher),
            "size_on_disk_mb": size_on_disk_mb(folder),
            # Stored by the latest timing session (None: not timed yet).
            "latency_ms": teacher_timing.get("latency_ms"),
            "timing": teacher_timing.get("timing"),
            "accuracy": classification_metrics(teacher_logits, teacher_logits, context["labels"])[
                "accuracy"
            ],
            "attack": None,
        }
        check_teacher_quality(
            teacher_record["accuracy"], context["labels"], config.teacher.min_margin_over_majority
        )
        if state.is_main_process:
            context["teacher_attack"] = teacher_attack(
                config, teacher, tokenizer, task, folder, progress, context["attack_worker"]
            )
            if context["teacher_attack"] is not None:
                teacher_record["attack"] = dict(context["teacher_attack"].summary)
        state.wait_for_everyone()
        # The teacher's fingerprint and its saved files: a teacher redone with other weights makes
        # every run stale.
        teacher_fp = fingerprint(
            {
                "key": teacher_done.get("fingerprint") if teacher_done else None,
                "files": teacher_done.get("files") if teacher_done else None,
            }
        )

        inputs = task_inputs(config)  # the task files' hashes, once for every run
        runs: list[dict[str, Any]] = []
        folders: list[Path] = []
        plan = [(spec, seed) for spec in config.runs() for seed in config.seeds]
        bar = tqdm(plan, desc="study", unit="run", disable=not (progress and state.is_main_process))
        for spec, seed in bar:
            bar.set_postfix_str(f"{spec.method} seed {seed}")
            run_folder = output / "methods" / spec.method / f"seed-{seed}"
            key = _run_key(config, spec, seed, teacher_fp, inputs)
            done = read_json(run_folder / "done.json")
            if _reusable(done, key, run_folder, spec, seed):
                logger.info("%s seed %d: finished before, skipped", spec.method, seed)
                record = done["run"]
            else:
                logger.info("%s seed %d: running", spec.method, seed)
                record = _do_run(spec, seed, run_folder, key, config, context, state)
            runs.append(record)
            folders.append(run_folder)
            if state.is_main_process:
                write_json(
                    output / "results.json",
                    _results(config, task, teacher_record, runs, state.num_processes),
                )
        bar.close()

        results = _results(config, task, teacher_record, runs, state.num_processes)
        if state.is_main_process:
            pending = [
                (run, run_folder)
                for run, run_folder in zip(runs, folders, strict=True)
                if _needs_timing(run, retime)
            ]
            if pending or retime or teacher_record["timing"] is None:
                batch = latency_batch(validation, collator, config.measure.latency_batch_size)
                _time_session(config, output, teacher_record, pending, batch)
            else:
                logger.info("timing: every finished run was timed before (--retime times again)")
            results = _results(config, task, teacher_record, runs, state.num_processes)
            write_json(output / "results.json", results)
            from loyalkit.study.report import write_report

            written = write_report(results, output)
            logger.info("report: %s", ", ".join(str(p) for p in written))
        state.wait_for_everyone()
        if not state.is_main_process:
            results = read_json(output / "results.json")
    return results
