"""Robustness under adversarial attack at every evaluation of a plain ``transformers.Trainer``.

``AttackCallback(recipe="textfooler-offline", num_examples=100, seed=0).attach(trainer)`` attacks a
fixed, seeded sample of the evaluation set with the current model after each evaluation and adds
:func:`~loyalkit.robustness.attack_runner.attack_model`'s summary to the evaluation's metrics under
its prefix: ``eval_attack_original_accuracy``, ``eval_attack_after_attack_accuracy``,
``eval_attack_attack_success_rate``, ``eval_attack_mean_queries``,
``eval_attack_mean_words_perturbed`` and the counts ``eval_attack_num_succeeded`` / ``_failed`` /
``_skipped`` / ``_errors`` / ``_attacked`` / ``_requested``. They are part of what ``evaluate()``
returns and of what ``metric_for_best_model`` sees (e.g.
``metric_for_best_model="attack_after_attack_accuracy"``), and are logged with ``trainer.log``
(``state.log_history``, reporting integrations), hence ``attach``.

The attack reads the raw text columns (``text_columns``) and the gold labels of
``trainer.eval_dataset`` (the Trainer drops unused columns only inside its dataloader; with a
dict of evaluation sets, the one being evaluated), or of the ``dataset`` given here; a set passed
to ``evaluate(eval_dataset=...)`` reaches callbacks without its text columns, so that evaluation
still attacks ``trainer.eval_dataset`` (or ``dataset``). The numbers are those of ``attack_model``
on the same model and configuration, and the same rows are attacked at every evaluation.

Where it runs: TextAttack needs transformers < 5, so its search runs in the isolated environment
``loyalkit attack setup`` builds, in one long-lived worker per callback
(:class:`~loyalkit.robustness.isolated.AttackWorker`, started at the first evaluation, ended at
the end of training, after Ctrl-C and when this process dies); the model is queried here, as it
is, through the dynamic-padding wrapper. Your environment keeps its transformers.

Resources: ``attach`` checks that the files the recipe reads are in place (stop words; WordNet
for textfooler-offline and pwws-offline; the counter-fitted neighbour sets for textfooler-offline,
written by ``loyalkit attack prepare-data --online``) and raises one ``MissingResourceError``
naming what is missing and that command.

Reliability: an example whose attack raises is counted in ``num_errors``; any other failure of the
attack (no environment built, a worker that crashes or sends nothing for ``worker_timeout_s``, a
recipe that cannot be built) is logged (``logging``) with its reason and reported as NaN values,
and training goes on. An attack that attacked nothing (time budget spent, every example errored)
reports NaN too, never 0.0, and logs ``num_attacked`` and the stop reason. Wherever the values
are NaN, ``metric_for_best_model``, if it is one of them, gets the worst value instead, so a
later evaluation can still win.

Several processes: under ``torchrun`` / ``accelerate launch`` every process attacks its share of
the sampled rows (rows ``rank``, ``rank + world_size``, ...) with its own worker on its own
replica of the model, and the per-example records are gathered
(``torch.distributed.all_gather_object``) and summarised in the sample's order: every process
reports the same values, equal to one process's. TextAttack is seeded again before each example
(``AttackConfig.seed_each_example``), so an example's outcome does not depend on the process that
attacks it. If any process's attack fails, every process reports NaN. An attack must end within
the process group's timeout (``ddp_timeout``; use ``time_budget_s``, which each process applies
to its share). Models sharded across processes (FSDP, ZeRO-3) are not supported.

Example:
    >>> from loyalkit.callbacks import AttackCallback
    >>> # trainer = Trainer(model=student, args=args, train_dataset=train, eval_dataset=dev)
    >>> # AttackCallback("deepwordbug", num_examples=50, seed=0).attach(trainer)
    >>> # trainer.train(); trainer.evaluate()["eval_attack_after_attack_accuracy"]
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from loyalkit.robustness.attack_env import AttackEnvironmentMissing, find_environment
from loyalkit.robustness.attack_runner import (
    SUMMARY_KEYS,
    AttackConfig,
    AttackReport,
    sample_rows,
    summarize,
)
from loyalkit.robustness.isolated import AttackWorker
from loyalkit.robustness.resource_check import check_resources

if TYPE_CHECKING:
    from loyalkit.robustness.textattack_setup import OfflineResources

__all__ = ["AttackCallback"]

logger = logging.getLogger(__name__)


class AttackCallback(TrainerCallback):
    """Adversarial robustness of the model at every evaluation (see the module docstring).

    Args:
        recipe: the attack (``loyalkit.robustness.recipes``), e.g. ``"textfooler-offline"``.
        num_examples: rows sampled from the evaluation set (``numpy.random.default_rng(seed)``).
        seed: seeds the sample and the attack's random draws: the same rows at every evaluation.
        query_budget: the most model queries per example.
        time_budget_s: the most seconds per evaluation's attack.
        dataset: rows to attack instead of the Trainer's evaluation set.
        tokenizer: the model's tokenizer (default: the Trainer's ``processing_class``).
        text_columns: the raw text column(s): one, or two for sentence pairs.
        label_column: the gold label column (default: ``"label"``, else ``"labels"``).
        batch_size: the most queries per forward pass.
        resources: TextAttack's offline data (``loyalkit.robustness.textattack_setup``).
        prefix: put before each summary key (after the evaluation's own prefix).
        examples_dir: if set, the main process saves each evaluation's examples there as
            ``<metric prefix>-step-<global step>.json``.
        worker: the TextAttack worker to use (default: one of this callback's own, on the
            environment of ``loyalkit attack setup``; a worker passed here is not closed).
        worker_timeout_s: the most seconds the callback's own worker may stay silent.
    """

    def __init__(
        self,
        recipe: str = "textfooler-offline",
        num_examples: int = 100,
        seed: int = 0,
        query_budget: int | None = None,
        time_budget_s: float | None = None,
        *,
        dataset: Any = None,
        tokenizer: Any = None,
        text_columns: Sequence[str] = ("sentence",),
        label_column: str | None = None,
        batch_size: int = 32,
        resources: OfflineResources | None = None,
        prefix: str = "attack_",
        examples_dir: str | Path | None = None,
        worker: AttackWorker | None = None,
        worker_timeout_s: float = 300.0,
    ) -> None:
        if worker is not None and not isinstance(worker, AttackWorker):
            raise TypeError(f"`worker` must be an AttackWorker, got {type(worker).__name__}")
        self.config = AttackConfig(
            seed_each_example=True,
            recipe=recipe,
            num_examples=num_examples,
            seed=seed,
            query_budget=query_budget,
            time_budget_s=time_budget_s,
            batch_size=batch_size,
            resources=resources,
        )
        if isinstance(text_columns, str) or not 1 <= len(text_columns) <= 2:
            raise ValueError(
                f"`text_columns` must name 1 column or 2 (sentence pairs), got {text_columns!r}"
            )
        if label_column is not None and not isinstance(label_column, str):
            raise TypeError(f"`label_column` must be a column name, got {label_column!r}")
        if not isinstance(prefix, str):
            raise TypeError(f"`prefix` must be a string, got {prefix!r}")
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.text_columns = tuple(text_columns)
        self.label_column = label_column
        self.prefix = prefix
        self.examples_dir = Path(examples_dir) if examples_dir is not None else None
        self.last_report: AttackReport | None = None
        self.failures: list[str] = []
        #: Positions in the sample this process attacked at the last evaluation.
        self.attacked_positions: list[int] = []
        self._trainer: Trainer | None = None
        self._owns_worker = worker is None
        self.worker = worker if worker is not None else AttackWorker(timeout_s=worker_timeout_s)

    def attach(self, trainer: Trainer) -> AttackCallback:
        """Register with ``trainer`` (whose ``log`` records the values); returns the callback.

        A callback already in ``Trainer(..., callbacks=[...])`` is not registered twice.
        """
        if not isinstance(trainer, Trainer):
            raise TypeError(
                f"`trainer` must be a transformers.Trainer, got {type(trainer).__name__}"
            )
        if self._trainer is not None:
            raise ValueError("this AttackCallback is already attached to a Trainer")
        if self.tokenizer is None and self._trainer_tokenizer(trainer) is None:
            raise ValueError(
                "AttackCallback needs the model's tokenizer: pass `tokenizer=` or give the "
                "Trainer a `processing_class`"
            )
        if self.dataset is None and trainer.eval_dataset is None:
            raise ValueError(
                "AttackCallback needs raw texts to attack: give the Trainer an `eval_dataset` "
                "with the text columns, or pass `dataset=`"
            )
        for dataset in self._candidate_datasets(trainer):
            self._check_columns(dataset)
        # A missing file would fail every evaluation's attack: say so once, before training.
        check_resources(self.config.recipe, self.config.resources, who="AttackCallback")
        if self._owns_worker and self.worker.python is None:
            try:
                find_environment(self.worker.env_dir)
            except AttackEnvironmentMissing as missing:
                logger.warning("AttackCallback: %s; until then the attack values are NaN", missing)
        self._trainer = trainer
        if not any(cb is self for cb in trainer.callback_handler.callbacks):
            trainer.add_callback(self)
        return self

    def close(self) -> None:
        """End the callback's own worker (done at the end of training; a later evaluation
        starts a new one)."""
        if self._owns_worker:
            self.worker.close()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self.close()

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._require_attached()

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        trainer = self._require_attached()
        if metrics is None:
            return
        metric_prefix = _metric_prefix(metrics)
        values = self._attack(trainer, metric_prefix, state.global_step)
        metrics.update(values)
        trainer.log(dict(values))

    def _attack(self, trainer: Trainer, metric_prefix: str, step: int) -> dict[str, float]:
        """This process's share of the attack, gathered: the same values on every process."""
        keys = [f"{metric_prefix}_{self.prefix}{key}" for key in SUMMARY_KEYS]
        rank, world = _rank_and_world()
        part: dict[str, Any]
        try:
            rows = self._rows(trainer, metric_prefix)
            mine = list(range(rank, len(rows), world))
            self.attacked_positions = mine
            report = self._run(trainer, [rows[i] for i in mine])
            part = {
                "examples": [(mine[n], example) for n, example in enumerate(report.examples)],
                "stop_reason": report.stop_reason,
                "elapsed_s": report.elapsed_s,
                "requested": len(rows),
            }
        except Exception as error:  # the attack must never end the training run
            logger.exception("AttackCallback: the attack at step %d failed (rank %d)", step, rank)
            part = {"error": f"{type(error).__name__}: {error}"}
        parts = _gather(part, world)
        errors = [f"rank {r}: {p['error']}" for r, p in enumerate(parts) if "error" in p]
        if errors:
            self.failures.append(f"step {step}: " + "; ".join(errors))
            return self._failure_values(trainer.args, keys)
        report = _merged(parts, self.config, self.text_columns)
        self.last_report = report
        if report.summary["num_attacked"] == 0:
            logger.warning(
                "AttackCallback: the attack at step %d attacked no example (num_attacked=0 of %d, "
                "stop reason: %s); its values are NaN",
                step,
                report.summary["num_requested"],
                report.stop_reason,
            )
            self.failures.append(f"step {step}: nothing attacked ({report.stop_reason})")
        if self.examples_dir is not None and trainer.args.process_index == 0:
            try:
                report.save(self.examples_dir / f"{metric_prefix}-step-{step}.json")
            except OSError:
                logger.exception("AttackCallback: could not save the adversarial examples")
        values = {f"{metric_prefix}_{k}": v for k, v in report.to_metrics(self.prefix).items()}
        return self._worst_for_best(trainer.args, values)

    def _rows(self, trainer: Trainer, metric_prefix: str) -> list[tuple[int, tuple[str, ...], int]]:
        dataset = self._dataset_for(trainer, metric_prefix)
        label_column = self.label_column or _default_label_column(dataset)
        return sample_rows(
            dataset, self.config.num_examples, self.config.seed, self.text_columns, label_column
        )

    def _run(self, trainer: Trainer, rows: list[tuple[int, tuple[str, ...], int]]) -> AttackReport:
        model = trainer.model
        if model is None:
            raise ValueError("the Trainer has no model to attack")
        tokenizer = self.tokenizer or self._trainer_tokenizer(trainer)
        # The worker keeps the recipe between evaluations and forgets the model outputs it
        # cached (the weights changed); the transformation and constraint caches stay.
        return self.worker.attack(model, tokenizer, rows, self.config, self.text_columns)

    def _failure_values(self, args: TrainingArguments, keys: list[str]) -> dict[str, float]:
        return self._worst_for_best(args, {key: math.nan for key in keys})

    @staticmethod
    def _worst_for_best(args: TrainingArguments, values: dict[str, float]) -> dict[str, float]:
        """``values`` with a NaN ``metric_for_best_model`` replaced by its worst value."""
        best = args.metric_for_best_model
        if best is not None:
            best = best if best.startswith("eval_") else f"eval_{best}"
            if best in values and math.isnan(values[best]):
                values[best] = -math.inf if args.greater_is_better else math.inf
        return values

    def _dataset_for(self, trainer: Trainer, metric_prefix: str) -> Any:
        if self.dataset is not None:
            return self.dataset
        dataset = trainer.eval_dataset
        if isinstance(dataset, dict):
            name = metric_prefix.removeprefix("eval_")
            if name not in dataset:
                raise ValueError(
                    f"no evaluation set named {name!r} among {sorted(dataset)} to attack"
                )
            dataset = dataset[name]
        return dataset

    def _candidate_datasets(self, trainer: Trainer) -> list[Any]:
        if self.dataset is not None:
            return [self.dataset]
        if isinstance(trainer.eval_dataset, dict):
            return list(trainer.eval_dataset.values())
        return [trainer.eval_dataset]

    def _check_columns(self, dataset: Any) -> None:
        names = getattr(dataset, "column_names", None)
        if not isinstance(names, list):
            return  # a plain sequence of dicts: checked row by row when sampled
        missing = [c for c in self.text_columns if c not in names]
        if missing:
            raise ValueError(
                f"the dataset to attack has no raw text column(s) {missing} (it has {names}): "
                "keep the text columns in the evaluation set or pass `text_columns=`"
            )
        if self.label_column is not None and self.label_column not in names:
            raise ValueError(f"the dataset to attack has no label column {self.label_column!r}")
        if self.label_column is None:
            _default_label_column(dataset)

    def _require_attached(self) -> Trainer:
        if self._trainer is None:
            raise ValueError(
                "AttackCallback is in the Trainer's callbacks but was never attached: call "
                "`AttackCallback(...).attach(trainer)` after building the Trainer (it reads the "
                "raw texts of trainer.eval_dataset and logs with trainer.log, which callbacks are "
                "not given; `callbacks=[...]` alone cannot)"
            )
        return self._trainer

    @staticmethod
    def _trainer_tokenizer(trainer: Trainer) -> Any:
        return getattr(trainer, "processing_class", None) or getattr(trainer, "tokenizer", None)


def _metric_prefix(metrics: dict[str, float]) -> str:
    """The evaluation's key prefix (``eval``, or ``eval_<name>`` for a dict of sets)."""
    for key in metrics:
        if key.endswith("_runtime"):
            return key[: -len("_runtime")]
    return "eval"


def _default_label_column(dataset: Any) -> str:
    names = getattr(dataset, "column_names", None)
    if not isinstance(names, list):
        try:
            names = list(dataset[0])
        except (IndexError, KeyError, TypeError):
            names = []
    for name in ("label", "labels"):
        if name in names:
            return name
    raise ValueError(
        f"the dataset to attack has no `label` or `labels` column (it has {names}): pass "
        "`label_column=`"
    )


def _rank_and_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _gather(part: dict[str, Any], world: int) -> list[dict[str, Any]]:
    """Every process's ``part``, in rank order (``[part]`` when not distributed)."""
    if world < 2:
        return [part]
    import torch.distributed as dist

    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, part)
    return parts


def _merged(
    parts: list[dict[str, Any]], config: AttackConfig, text_columns: tuple[str, ...]
) -> AttackReport:
    """One report from the processes' shares, examples in the sample's order."""
    ordered = sorted((e for p in parts for e in p["examples"]), key=lambda item: item[0])
    reasons = [p["stop_reason"] for p in parts if p["stop_reason"]]
    examples = [example for _, example in ordered]
    return AttackReport(
        summary=summarize(examples, parts[0]["requested"]),
        examples=examples,
        recipe=config.recipe,
        text_columns=text_columns,
        seed=config.seed,
        stop_reason=reasons[0] if reasons else None,
        elapsed_s=max(p["elapsed_s"] for p in parts),
    )
