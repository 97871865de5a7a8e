"""A Hugging Face model card for one compressed model of the study.

The card's YAML front matter holds a ``model-index`` whose results are the model's accuracy, label
loyalty, probability loyalty, flips, after-attack accuracy, attack success rate, mean queries and
CPU speed-up over the teacher (fractions in [0, 1], as in ``results.json``), with ``base_model``
(the teacher, when it is known by a Hub id), ``tags`` (``loyalkit``, ``compression``, the method)
and ``datasets``. The body says how the model was made, shows its numbers beside the teacher's
(and the method's mean ± std over seeds), how to load it, and the citation of Xu et al. (2021).

``ModelCard.validate`` needs the network (it asks the Hub); :func:`check_model_card` validates
offline: the text is parsed back with ``huggingface_hub.ModelCard`` (which converts the
model-index with ``model_index_to_eval_results`` and refuses malformed results) and the parsed
results must equal the ones written.

Example:
    >>> run = {"method": "int8-ptq", "title": "Q8-PTQ", "seed": 0, "status": "done",
    ...        "accuracy": 0.82, "label_loyalty": 0.91, "speedup": 1.76}
    >>> [(m.type, m.value) for m in card_metrics(run)]
    [('accuracy', 0.82), ('label_loyalty', 0.91), ('speedup', 1.76)]
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from loyalkit.citation import XU_2021_CITATION
from loyalkit.study.records import RunRecord, StudyResults, TeacherRecord, as_results

if TYPE_CHECKING:
    from huggingface_hub import EvalResult, ModelCard

__all__ = [
    "CARD_METRICS",
    "CardMetric",
    "ModelCardError",
    "build_model_card",
    "card_eval_results",
    "card_metrics",
    "check_model_card",
    "find_run",
    "is_int8",
]

#: ``(metric type, display name, where in a run)``: the numbers a card's model-index records.
CARD_METRICS: tuple[tuple[str, str, str], ...] = (
    ("accuracy", "Accuracy", "accuracy"),
    ("label_loyalty", "Label loyalty", "label_loyalty"),
    ("probability_loyalty", "Probability loyalty", "probability_loyalty"),
    ("flips", "Flips", "flips"),
    ("after_attack_accuracy", "After-attack accuracy", "attack.after_attack_accuracy"),
    ("attack_success_rate", "Attack success rate", "attack.attack_success_rate"),
    ("mean_queries", "Mean queries per attacked example", "attack.mean_queries"),
    ("speedup", "CPU speed-up over the teacher", "speedup"),
)
REQUIRED_TAGS: tuple[str, ...] = ("loyalkit", "compression")
TASK_TYPE = "text-classification"
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


class ModelCardError(ValueError):
    """A model card whose metadata is invalid or does not hold what was written."""


@dataclass(frozen=True)
class CardMetric:
    """One number of a card's model-index: its type, display name and value."""

    type: str
    name: str
    value: float


def card_metrics(run: RunRecord | Mapping[str, Any]) -> list[CardMetric]:
    """The ``CARD_METRICS`` a run has (missing or non-numeric values are left out)."""
    run = _record(run)
    metrics = []
    for metric_type, name, where in CARD_METRICS:
        field, *inner = where.split(".")
        value: Any = getattr(run, field)
        for part in inner:  # inside the attack summary, a dict
            value = value.get(part) if isinstance(value, Mapping) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
            metrics.append(CardMetric(metric_type, name, float(value)))
    return metrics


def find_run(
    results: StudyResults | Mapping[str, Any], method: str, seed: int | None = None
) -> RunRecord:
    """The done run of ``method`` with ``seed`` (or its only done seed) in ``results``."""
    runs = as_results(results).runs
    available = sorted({r.method for r in runs})
    mine = [r for r in runs if r.method == method]
    if not mine:
        raise ValueError(
            f"`method` {method!r} is not in the results; available: {', '.join(available) or '-'}"
        )
    done = [r for r in mine if r.status == "done"]
    if seed is None:
        if len(done) != 1:
            seeds = ", ".join(str(r.seed) for r in done) or "none"
            raise ValueError(f"`seed`: method {method!r} has done seeds {seeds}; pick one")
        return done[0]
    chosen = [r for r in mine if r.seed == seed]
    if not chosen:
        seeds = ", ".join(str(r.seed) for r in mine)
        raise ValueError(f"`seed` {seed} did not run for method {method!r}; seeds: {seeds}")
    if chosen[0].status != "done":
        raise ValueError(f"method {method!r} seed {seed} failed; there is no model to describe")
    return chosen[0]


def is_int8(run: RunRecord | Mapping[str, Any], model_dir: str | Path | None = None) -> bool:
    """Whether the model is loyalkit's int8 (OpenVINO IR written by ``export_int8``, loaded with
    ``OpenVINOInt8Classifier``): its config.json says so, or (without the folder) an int8 method
    name. A torchao int8 folder of an earlier version reloads with the plain ``from_pretrained``
    the card shows for float models."""
    if model_dir is not None and (Path(model_dir) / "config.json").is_file():
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
        return "loyalkit_int8" in config
    # Only the name is read: a bare {"method": ...} will do.
    method = run.method if isinstance(run, RunRecord) else run.get("method", "")
    return "int8" in str(method).lower()


def card_eval_results(
    run: RunRecord | Mapping[str, Any],
    task: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
) -> list[EvalResult]:
    """The model-index entries of one run: one ``EvalResult`` per metric in ``card_metrics``."""
    from huggingface_hub import EvalResult

    dataset = _dataset(task, config)
    return [
        EvalResult(
            task_type=TASK_TYPE,
            task_name="Text Classification",
            dataset_type=dataset["type"],
            dataset_name=dataset["name"],
            dataset_config=dataset["config"],
            dataset_split=dataset["split"],
            metric_type=metric.type,
            metric_name=metric.name,
            metric_value=metric.value,
        )
        for metric in card_metrics(run)
    ]


def build_model_card(
    results: StudyResults | Mapping[str, Any],
    method: str,
    seed: int | None = None,
    *,
    repo_id: str | None = None,
    base_model: str | None = None,
    license: str | None = None,
    model_dir: str | Path | None = None,
) -> ModelCard:
    """The model card of the ``method``/``seed`` model of a study's ``results`` (results.json).

    ``repo_id`` names the model in the card and in its loading example; ``base_model`` defaults
    to the teacher when the study's config names it by a Hub id; ``model_dir`` (the saved model)
    tells whether its weights are int8. The card is checked with :func:`check_model_card`.
    """
    from huggingface_hub import ModelCard, ModelCardData

    results = as_results(results)
    run = find_run(results, method, seed)
    task = results.task or {}
    config = results.config or {}
    eval_results = card_eval_results(run, task, config)
    if not eval_results:
        raise ValueError(f"method {method!r} seed {run.seed} has no metrics to record")
    base = base_model if base_model is not None else teacher_hub_id(config)
    name = repo_id.split("/")[-1] if repo_id else f"{task.get('name', 'task')}-{method}"
    dataset = _dataset(task, config)
    data = ModelCardData(
        model_name=name,
        base_model=base,
        datasets=[dataset["type"]] if dataset["on_hub"] else None,
        library_name="transformers",
        license=license,
        pipeline_tag=TASK_TYPE,
        tags=[*REQUIRED_TAGS, method, TASK_TYPE],
        eval_results=eval_results,
    )
    body = _body(results, run, name, base, repo_id, is_int8(run, model_dir))
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    check_model_card(card, eval_results)
    return card


def check_model_card(
    card: ModelCard | str, expected: Sequence[EvalResult] | None = None
) -> ModelCard:
    """Validate a card offline; return it parsed back from its text.

    Raises ``ModelCardError`` when the front matter is not valid YAML or a valid model-index,
    lacks ``model_name`` or the tags ``loyalkit`` and ``compression``, or (given ``expected``)
    its parsed results differ from ``expected``.
    """
    import yaml
    from huggingface_hub import ModelCard

    text = str(card)
    try:
        parsed = ModelCard(text, ignore_metadata_errors=False)
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as err:
        detail = " ".join(str(err).split())
        raise ModelCardError(f"the model card's metadata is invalid: {detail}") from err
    problems = []
    data: Any = parsed.data  # ModelCardData; typed as the generic CardData
    if not text.startswith("---\n"):
        problems.append("no YAML front matter at the top")
    if not data.model_name:
        problems.append("no model name (model-index[0].name)")
    if not data.eval_results:
        problems.append("no model-index results")
    missing = [tag for tag in REQUIRED_TAGS if tag not in (data.tags or [])]
    if missing:
        problems.append(f"tags lack {', '.join(missing)}")
    if expected is not None and list(data.eval_results or []) != list(expected):
        problems.append("the parsed model-index results differ from the ones written")
    if problems:
        raise ModelCardError("invalid model card: " + "; ".join(problems))
    return parsed


def teacher_hub_id(config: Mapping[str, Any]) -> str | None:
    """The teacher's Hub id from a study config, when it has one (``minilm`` is all-MiniLM-L6-v2)."""
    teacher = config.get("teacher")
    model = teacher.get("model") if isinstance(teacher, Mapping) else None
    if model == "minilm":
        return MINILM_HUB_ID
    if isinstance(model, str) and _HUB_ID.match(model) and not Path(model).exists():
        return model
    return None


# ---------------------------------------------------------------- helpers


def _dataset(task: Mapping[str, Any], config: Mapping[str, Any] | None) -> dict[str, Any]:
    task_config = (config or {}).get("task") or {}
    hub_id = task_config.get("dataset") if isinstance(task_config, Mapping) else None
    on_hub = isinstance(hub_id, str) and not Path(hub_id).exists()
    name = str(task.get("name") or hub_id or "local files")
    split = task_config.get("validation_split", "validation") if on_hub else "validation"
    return {
        "type": hub_id if on_hub else name,
        "name": name,
        "config": task_config.get("dataset_config") if on_hub else None,
        "split": split,
        "on_hub": on_hub,
    }


def _percent(value: Any) -> str:
    return f"{100 * value:.1f}" if isinstance(value, (int, float)) else "—"


def _number(value: Any, digits: int = 1, suffix: str = "") -> str:
    return f"{value:.{digits}f}{suffix}" if isinstance(value, (int, float)) else "—"


#: The teacher of results without one: nothing measured, every cell "—".
_NO_TEACHER = TeacherRecord(model_dir="")


def _record(run: RunRecord | Mapping[str, Any]) -> RunRecord:
    return run if isinstance(run, RunRecord) else RunRecord.from_dict(run)


def _body(
    results: StudyResults,
    run: RunRecord,
    name: str,
    base: str | None,
    repo_id: str | None,
    int8: bool,
) -> str:
    from loyalkit.study.report import (
        DENSE_SPARSITY_METHODS,
        DENSE_SPARSITY_NOTE,
        UNDER_LOAD_MARK,
        summarize,
    )
    from loyalkit.study.timing import describe_load, under_load

    task = results.task or {}
    teacher = results.teacher or _NO_TEACHER
    config = results.config or {}
    method, title = run.method, run.title or run.method
    entry = next(e for e in summarize(results.runs) if e["method"] == method)
    several = entry["seeds"] >= 2
    teacher_attack: Mapping[str, Any] = _mapping(teacher.attack)
    attack: Mapping[str, Any] = _mapping(run.attack)
    settings = (config.get("methods") or {}).get(method) if isinstance(config, Mapping) else None
    attack_config: Mapping[str, Any] = _mapping(config.get("attack"))

    lines = [f"# {name}", ""]
    teacher_text = f"`{base}`" if base else "a local model"
    train_data = task.get("train_data") or "the task's training data"
    if teacher.fine_tuned is False:
        made = f"teacher ({teacher_text}, used as given, not fine-tuned by the study)"
    else:
        made = f"teacher fine-tuned from {teacher_text} on **{train_data}**"
    lines.append(
        f"A compressed text classifier: **{title}** (loyalkit method `{method}`) applied to a "
        f"{made} "
        f"({task.get('num_labels', '?')} labels: {', '.join(map(str, task.get('label_names', [])))}). "
        f"Made with loyalkit in a study of how *loyal* compressed models "
        "stay to their teacher (Xu et al., 2021), seed "
        f"{run.seed}."
    )
    lines += ["", "## How it was made", ""]
    lines.append(
        "`loyalkit study run` took the teacher, produced this model with the "
        f"`{method}` method (training data: {train_data}) and measured it against the teacher "
        f"on the validation set ({task.get('validation_data') or 'the validation split'}, "
        f"{task.get('validation_size', '?')} examples)."
    )
    if settings:
        lines += ["", "Method settings:", "", "```json", json.dumps(settings, indent=2), "```"]
    lines += ["", "## Results", ""]
    lines.append(
        "Label loyalty: share of the teacher's predicted labels this model reproduces. "
        "Probability loyalty: mean of 1 - sqrt(JSD(teacher || model)). Flips: share of answers "
        "that change between correct and incorrect. Speed-up: teacher latency / model latency on "
        "CPU, both timed in the same session. The model-index metadata stores fractions in [0, 1]."
    )
    lines += [""]
    header = ["Metric", "This model", "Teacher"] + (
        [f"{title}, {entry['seeds']} seeds"] if several else []
    )
    lines += [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|",
    ]

    def stat(key: str, scale: float, digits: int, suffix: str = "") -> list[str]:
        if not several:
            return []
        value = entry.get(key)
        if not isinstance(value, Mapping):
            return ["—"]
        return [f"{scale * value['mean']:.{digits}f} ± {scale * value['std']:.{digits}f}{suffix}"]

    loaded = f" {UNDER_LOAD_MARK}" if run.speedup is not None and under_load(run.timing) else ""
    seeds_speedup = stat("speedup", 1, 2, "x")
    if seeds_speedup and seeds_speedup[0] != "—" and entry["speedup_under_load"]:
        seeds_speedup[0] += f" {UNDER_LOAD_MARK}"  # a seed of the method was timed under load
    rows = [
        ("Accuracy (%)", _percent(run.accuracy), _percent(teacher.accuracy), stat("accuracy", 100, 1)),
        ("Label loyalty (%)", _percent(run.label_loyalty), "100.0", stat("label_loyalty", 100, 1)),
        ("Probability loyalty (%)", _percent(run.probability_loyalty), "100.0", stat("probability_loyalty", 100, 1)),
        ("Flips (%)", _percent(run.flips), "0.0", stat("flips", 100, 1)),
        ("After-attack accuracy (%)", _percent(attack.get("after_attack_accuracy")), _percent(teacher_attack.get("after_attack_accuracy")), stat("after_attack_accuracy", 100, 1)),
        ("Attack success rate (%)", _percent(attack.get("attack_success_rate")), _percent(teacher_attack.get("attack_success_rate")), stat("attack_success_rate", 100, 1)),
        ("Mean queries", _number(attack.get("mean_queries")), _number(teacher_attack.get("mean_queries")), stat("mean_queries", 1, 1)),
        ("CPU speed-up", _number(run.speedup, 2, "x") + loaded, "1.00x", seeds_speedup),
        ("Layers", _number(run.layers, 0), _number(teacher.layers, 0), []),
        ("Parameters (M)", _number(_millions(run.parameters)), _number(_millions(teacher.parameters)), []),
        ("Size on disk (MB)", _number(run.size_on_disk_mb), _number(teacher.size_on_disk_mb), []),
    ]  # fmt: skip
    for label, mine, teachers, seeds in rows:
        extra = seeds if several and seeds else (["—"] if several else [])
        lines.append("| " + " | ".join([label, mine, teachers, *extra]) + " |")
    if loaded:
        lines += [
            "",
            f"{UNDER_LOAD_MARK} This model's speed-up was timed under load "
            f"({describe_load(run.timing)}): other processes competed for the cores, so the "
            "figure may be off either way.",
        ]
    elif seeds_speedup and seeds_speedup[0].endswith(UNDER_LOAD_MARK):
        lines += [
            "",
            f"{UNDER_LOAD_MARK} Seeds of {title} timed under load: "
            f"{entry['speedup_under_load']} of {entry['seeds']} (the study's results.md gives "
            "the load of each).",
        ]
    elif run.speedup is not None and run.timing is None:
        lines += ["", "The speed-up was timed without a record of the machine's load."]
    if run.method.startswith(DENSE_SPARSITY_METHODS):
        lines += ["", DENSE_SPARSITY_NOTE.format(methods=title)]
    recipe = attack_config.get("recipe")
    if attack or teacher_attack:
        lines += [
            "",
            f"Attack: `{recipe or '?'}` on {attack.get('num_attacked', attack_config.get('num_examples', '?'))} "
            "validation examples (the same examples for the teacher and every model).",
        ]
    lines += ["", "## How to load it", ""]
    repo = repo_id or name
    if int8:
        lines += [
            "```python",
            "from transformers import AutoTokenizer",
            "",
            "from loyalkit.compression import OpenVINOInt8Classifier",
            "",
            f'model = OpenVINOInt8Classifier.from_pretrained("{repo}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
            "```",
            "",
            "The model is int8 OpenVINO IR (`openvino_model.xml`/`.bin`), quantized with NNCF "
            "by `loyalkit.compression.export_int8`; `pip install loyalkit[int8]` brings OpenVINO "
            "and NNCF. It runs on CPU and works in `Trainer.predict`/`evaluate`.",
        ]
    else:
        lines += [
            "```python",
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
            "",
            f'model = AutoModelForSequenceClassification.from_pretrained("{repo}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
            "```",
        ]
    lines += ["", "## Citation", "", "```bibtex", XU_2021_CITATION.strip(), "```", ""]
    return "\n".join(lines)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _millions(value: Any) -> float | None:
    return value / 1e6 if isinstance(value, (int, float)) else None
