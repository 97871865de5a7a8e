"""The study's attacks: the teacher's and each student's, with ``loyalkit.robustness``.

TextAttack runs in its isolated environment (``loyalkit attack setup``), in one worker for the
whole study (:class:`~loyalkit.robustness.isolated.AttackWorker`); the models are queried in the
study's process. A worker that is missing, crashes or hangs does not stop the study: that model's
attack values are NaN and the reason is logged.

Every model is attacked on the same validation rows (``attack.seed``); the teacher's report is
saved in ``teacher/attack.json`` and reused, while the attack settings are unchanged, for the
students' adversarial loyalty (the teacher's adversarial examples fed to each student). When
``loyalkit attack prepare-data`` has not prepared TextAttack's default resources, a stop-word list
and TextAttack's start-up marker are written into the study's ``attack-resources/`` folder (enough
for DeepWordBug); the user's home is left alone.

Example (``model``, ``tokenizer``: a classifier; ``task``: from ``load_task``)::

    report = attack(model, tokenizer, task, config, Path("attack.json"), "teacher", progress=True)
    report.summary["after_attack_accuracy"]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from loyalkit.study.config import StudyConfig
from loyalkit.study.state import fingerprint, read_json, write_json
from loyalkit.study.task_data import TaskData

__all__ = ["attack", "load_report", "teacher_attack"]

logger = logging.getLogger(__name__)


def _attack_resources(config: StudyConfig) -> Any:
    """TextAttack's offline resources: the paths the config names, over the default ones when
    prepared (``loyalkit attack prepare-data``), else over a stop-word list and TextAttack's
    start-up marker written into ``output/attack-resources`` (enough for DeepWordBug; the user's
    home is left alone)."""
    from dataclasses import replace

    from loyalkit.robustness import OfflineResources, prepare_nltk_data, prepare_textattack_cache
    from loyalkit.robustness.textattack_setup import TEXTATTACK_MARKER

    settings = config.attack
    resources = OfflineResources.default()
    assert resources.nltk_data is not None and resources.cache_dir is not None
    stopwords = Path("corpora") / "stopwords" / "english"
    if not (
        (Path(settings.nltk_data or resources.nltk_data) / stopwords).is_file()
        and (resources.cache_dir / TEXTATTACK_MARKER).is_file()
    ):
        folder = Path(config.output_dir) / "attack-resources"
        if not (folder / "nltk_data" / stopwords).is_file():
            logger.info("attack: writing a stop-word list and TextAttack's marker into %s", folder)
            prepare_nltk_data(folder / "nltk_data", wordnet_dir=None)
        prepare_textattack_cache(folder / "textattack")
        resources = OfflineResources(
            nltk_data=folder / "nltk_data", cache_dir=folder / "textattack"
        )
    return replace(
        resources,
        nltk_data=settings.nltk_data or resources.nltk_data,
        synonyms=settings.synonyms,
        sentence_encoder=settings.sentence_encoder,
    )


def _attack_config(config: StudyConfig) -> Any:
    from loyalkit.robustness import AttackConfig

    settings = config.attack
    return AttackConfig(
        resources=_attack_resources(config),
        recipe=settings.recipe,
        num_examples=settings.num_examples,
        seed=settings.seed,
        query_budget=settings.query_budget,
        time_budget_s=settings.time_budget_s,
        batch_size=settings.batch_size,
    )


#: ``stop_reason`` of a report whose attack could not run (the worker failed).
WORKER_FAILED = "worker_failed"


def failed_report(config: Any, rows: int, text_columns: tuple[str, ...], reason: str) -> Any:
    """The report of an attack that could not run: NaN rates and means, ``num_attacked`` 0."""
    from loyalkit.robustness.attack_runner import AttackReport, summarize

    return AttackReport(
        summary=summarize([], rows),
        examples=[],
        recipe=config.recipe,
        text_columns=text_columns,
        seed=config.seed,
        stop_reason=f"{WORKER_FAILED}: {reason}",
    )


def attack(
    model: Any,
    tokenizer: Any,
    task: TaskData,
    config: StudyConfig,
    path: Path,
    name: str,
    progress: bool,
    worker: Any,
) -> Any:
    """``loyalkit.robustness.attack_model`` through the study's ``worker``, with a progress bar
    over the sampled rows; a failed worker gives :func:`failed_report` (logged, not raised)."""
    from tqdm.auto import tqdm

    from loyalkit.robustness.attack_runner import attack_model
    from loyalkit.robustness.isolated import WorkerError

    attack_config = _attack_config(config)
    columns = tuple(task.text_columns)
    with tqdm(desc=f"attack {name}", unit="example", leave=False, disable=not progress) as bar:

        def show(done: int, sampled: int) -> None:
            bar.total = sampled
            bar.update(done - bar.n)

        try:
            report = attack_model(
                model, tokenizer, task.validation, attack_config, text_columns=columns,
                label_column=task.label_column, worker=worker, progress=show,
            )  # fmt: skip
        except WorkerError as error:
            logger.error("attack %s: no attack values (NaN): %s", name, error)
            report = failed_report(attack_config, bar.total, columns, str(error))
    if report.summary["num_attacked"] == 0:
        logger.warning(
            "attack %s: nothing attacked (num_attacked=0 of %d, stop reason: %s); values are NaN",
            name,
            bar.total,
            report.stop_reason,
        )
    report.save(path)
    return report


def load_report(path: Path) -> Any:
    from loyalkit.robustness import AttackReport

    data = read_json(path)
    if not isinstance(data, dict) or "summary" not in data:
        return None
    return AttackReport(
        summary=data["summary"],
        examples=data["examples"],
        recipe=data.get("recipe", ""),
        text_columns=tuple(data.get("text_columns", ("sentence",))),
        seed=data.get("seed", 0),
        stop_reason=data.get("stop_reason"),
        elapsed_s=data.get("elapsed_s", 0.0),
    )


def teacher_attack(
    config: StudyConfig,
    teacher: Any,
    tokenizer: Any,
    task: TaskData,
    folder: Path,
    progress: bool,
    worker: Any,
) -> Any:
    """The teacher's attack report, cached in ``folder`` per attack settings (not when the
    worker failed)."""
    if not config.attack.enabled:
        return None
    key = fingerprint(config.to_dict()["attack"])
    marker = read_json(folder / "attack-done.json")
    if isinstance(marker, dict) and marker.get("fingerprint") == key:
        report = load_report(folder / "attack.json")
        if report is not None:
            return report
    logger.info(
        "teacher: attacking %d examples with %s", config.attack.num_examples, config.attack.recipe
    )
    report = attack(
        teacher, tokenizer, task, config, folder / "attack.json", "teacher", progress, worker
    )
    if not str(report.stop_reason).startswith(WORKER_FAILED):
        write_json(folder / "attack-done.json", {"fingerprint": key})
    return report
