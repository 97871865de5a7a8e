"""The study's report: per-method mean and std over seeds, a Markdown table shaped like Table 1 of
Xu et al. (2021), and the plots.

``results`` is a :class:`~loyalkit.study.records.StudyResults` (teacher, runs, task, config), or
the parsed ``results.json``, read through it (runs: ``RunRecord`` or their dicts). Fractions are
stored in [0, 1]; the table shows them as percentages with one decimal, ``± std`` (sample std,
ddof=1) when a method ran with several seeds, and ``—`` where a value is missing. A speed-up timed
under load (``loyalkit.study.timing.under_load``: a 1-minute load average above one per CPU before
or after its timing) is marked :data:`UNDER_LOAD_MARK`, and a footnote gives the load of each such
run. Magnitude-pruned runs get a note that their zeros are stored dense and computed.

Example:
    >>> runs = [{"method": "kd", "title": "KD", "seed": s, "status": "done", "accuracy": a}
    ...         for s, a in ((0, 0.80), (1, 0.84))]
    >>> entry = summarize(runs)[0]
    >>> entry["seeds"], round(entry["accuracy"]["mean"], 4), round(entry["accuracy"]["std"], 4)
    (2, 0.82, 0.0283)
    >>> format_cell(entry["accuracy"], entry["seeds"], "percent")
    '82.0 ± 2.8'
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from loyalkit.study.records import RunRecord, StudyResults, TeacherRecord, as_results, as_runs
from loyalkit.study.timing import LOAD_PER_CPU_LIMIT, describe_load, under_load

__all__ = [
    "DENSE_SPARSITY_METHODS",
    "DENSE_SPARSITY_NOTE",
    "RUN_METRICS",
    "TABLE_COLUMNS",
    "UNDER_LOAD_MARK",
    "failed_runs",
    "format_cell",
    "report_notes",
    "results_markdown",
    "summarize",
    "table_rows",
    "write_report",
]

#: The numeric top-level fields of a run that ``summarize`` averages over seeds.
RUN_METRICS: tuple[str, ...] = (
    "layers",
    "parameters",
    "size_on_disk_mb",
    "latency_ms",
    "speedup",
    "train_seconds",
    "accuracy",
    "label_loyalty",
    "probability_loyalty",
    "flips",
    "kl_divergence",
)

#: ``(header, summary key, format)`` of each column of the results table after "Method".
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("Layers", "layers", "count"),
    ("Params (M)", "parameters", "millions"),
    ("Size (MB)", "size_on_disk_mb", "size"),
    ("Speed-up", "speedup", "times"),
    ("Acc", "accuracy", "percent"),
    ("Label loyalty", "label_loyalty", "percent"),
    ("Prob. loyalty", "probability_loyalty", "percent"),
    ("Flips", "flips", "percent"),
    ("After-attack acc", "after_attack_accuracy", "percent"),
    ("Queries", "mean_queries", "number"),
    ("Success rate", "attack_success_rate", "percent"),
)

MISSING = "—"
_ERROR_CHARS = 160

#: Appended to a speed-up cell when at least one of its seeds was timed under load.
UNDER_LOAD_MARK = "†"

#: Method-name prefixes whose zeros are stored dense: the report notes that they bring no speed.
DENSE_SPARSITY_METHODS: tuple[str, ...] = ("magnitude-pruning",)

_SPEEDUP_COLUMN = next(i for i, (_, key, _) in enumerate(TABLE_COLUMNS) if key == "speedup")

#: The note on :data:`DENSE_SPARSITY_METHODS` (``{methods}``: their titles), in the report and
#: the model card.
DENSE_SPARSITY_NOTE = (
    "{methods}: magnitude pruning sets weights to zero but keeps them in the dense weight "
    "matrices, which are stored and multiplied in full, so no speed-up is expected (about "
    "1.0x). Zeros only save time in a sparse format with kernels for it: "
    "PyTorch's 2:4 semi-structured sparsity has no CPU kernels (supported NVIDIA GPUs only; "
    "published at about 1.3x end to end on an A100, not measured by loyalkit). Structured "
    "pruning that removes heads, neurons or layers makes the matrices smaller instead."
)


def summarize(runs: Sequence[RunRecord | Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per method (in order of first appearance): seeds done, seeds failed, mean and std of each metric.

    Every numeric field of a done run is summarised: the fields of ``RUN_METRICS``, the attack
    summary flattened (``after_attack_accuracy``, ``attack_success_rate``, ``mean_queries``, ...)
    and ``adversarial_loyalty`` flattened with an ``adversarial_`` prefix. ``std`` is the sample
    standard deviation (ddof=1) over the seeds that have the value, 0.0 for a single one.
    ``speedup_under_load`` counts the seeds whose speed-up was timed under load.
    """
    by_method: dict[str, list[RunRecord]] = {}  # in order of first appearance
    for run in as_runs(runs):
        by_method.setdefault(run.method, []).append(run)
    summary = []
    for method, method_runs in by_method.items():
        done = [run for run in method_runs if run.status == "done"]
        entry: dict[str, Any] = {
            "method": method,
            "title": next((r.title for r in method_runs if r.title), method),
            "seeds": len(done),
            "failed": len(method_runs) - len(done),
            "speedup_under_load": len(_timed_under_load(done)),
        }
        values: dict[str, list[float]] = {}
        for run in done:
            for key, value in _numeric_fields(run):
                values.setdefault(key, []).append(value)
        for key, series in values.items():
            entry[key] = {"mean": statistics.fmean(series), "std": _sample_std(series)}
        summary.append(entry)
    return summary


def failed_runs(runs: Sequence[RunRecord | Mapping[str, Any]]) -> list[str]:
    """One line per failed run: method, seed and the last line of its error."""
    lines = []
    for run in as_runs(runs):
        if run.status == "done":
            continue
        error = str(run.error or "no error recorded").strip()
        last = next((line.strip() for line in reversed(error.splitlines()) if line.strip()), "")
        if len(last) > _ERROR_CHARS:
            last = last[: _ERROR_CHARS - 1] + "…"
        lines.append(f"{run.title or run.method} (`{run.method}`), seed {run.seed}: {last}")
    return lines


def format_cell(stat: Mapping[str, float] | float | None, seeds: int, kind: str) -> str:
    """One table cell: ``stat`` is ``{"mean", "std"}`` (or a bare number); ``kind`` its format.

    Kinds: ``percent`` (fraction shown x100, one decimal), ``number`` (one decimal),
    ``times`` (two decimals and ``x``); and for what a method fixes rather than measures,
    ``count`` (layers), ``millions`` (value / 1e6, one decimal), ``size`` (one decimal).
    ``± std`` is added when ``seeds >= 2`` (for the last three only when the seeds differ).
    """
    if stat is None:
        return MISSING
    mean, std = (stat["mean"], stat["std"]) if isinstance(stat, Mapping) else (float(stat), 0.0)
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return MISSING
    scale, digits, suffix = {
        "percent": (100.0, 1, ""),
        "number": (1.0, 1, ""),
        "millions": (1e-6, 1, ""),
        "times": (1.0, 2, "x"),
        "count": (1.0, 0, ""),
        "size": (1.0, 1, ""),
    }[kind]
    fixed = kind in ("count", "millions", "size")
    if kind == "count" and std == 0:
        return f"{mean:g}"
    text = f"{mean * scale:.{digits}f}{suffix}"
    if seeds >= 2 and not (fixed and std == 0):
        text += f" ± {std * scale:.{digits}f}"
    return text


def table_rows(results: StudyResults | Mapping[str, Any]) -> list[list[str]]:
    """The results table as rows of cells: the teacher first, then each method in run order.

    A speed-up cell gets :data:`UNDER_LOAD_MARK` when one of its seeds was timed under load.
    """
    results = as_results(results)
    rows = []
    if results.teacher is not None:
        stats = _teacher_stats(results.teacher)
        rows.append(["Teacher"] + [format_cell(stats.get(k), 1, f) for _, k, f in TABLE_COLUMNS])
    for entry in summarize(results.runs):
        seeds = entry["seeds"]
        title = entry["title"]
        if entry["failed"]:
            title += f" ({seeds}/{seeds + entry['failed']} seeds)"
        if seeds == 0:
            rows.append([title] + [MISSING for _ in TABLE_COLUMNS])
            continue
        cells = [format_cell(entry.get(k), seeds, f) for _, k, f in TABLE_COLUMNS]
        if entry["speedup_under_load"] and cells[_SPEEDUP_COLUMN] != MISSING:
            cells[_SPEEDUP_COLUMN] += f" {UNDER_LOAD_MARK}"
        rows.append([title] + cells)
    return rows


def _by_load(runs: Iterable[RunRecord]) -> dict[str, list[RunRecord]]:
    """``runs`` grouped by the load their timing saw, in order: the runs of one timing session
    (or of sessions under the same load) share one footnote entry instead of one each."""
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(describe_load(run.timing), []).append(run)
    return groups


def _runs_in_words(runs: Iterable[RunRecord]) -> str:
    """``Q8-PTQ (seeds 0, 1), KD (seed 2)``: each method once, with the seeds of ``runs``."""
    seeds: dict[str, list[int]] = {}
    for run in runs:
        seeds.setdefault(run.title or run.method, []).append(run.seed)
    return ", ".join(
        f"{title} (seed{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))})"
        for title, numbers in seeds.items()
    )


def report_notes(results: StudyResults | Mapping[str, Any]) -> list[str]:
    """The notes under the table about speed: runs timed under load (with the load each saw),
    speed-ups whose load was not recorded, and what magnitude pruning's speed-up means."""
    runs = as_results(results).runs
    notes = []
    loaded = _timed_under_load(runs)
    if loaded:
        details = "; ".join(
            f"{_runs_in_words(group)}: {load}" for load, group in _by_load(loaded).items()
        )
        notes.append(
            f"{UNDER_LOAD_MARK} Speed-up timed under load: the 1-minute load average before or "
            f"after the timing exceeded {LOAD_PER_CPU_LIMIT:g} per CPU, so other processes "
            "competed for the cores and the figure may be off either way "
            f"(`loyalkit study run --retime` on a quiet machine times it again). {details}."
        )
    unrecorded = _titles(
        r for r in runs if r.status == "done" and r.speedup is not None and r.timing is None
    )
    if unrecorded:
        notes.append(
            f"Speed-ups of {', '.join(unrecorded)} were timed without a record of the machine's "
            "load (results written before loyalkit recorded it): whether they were timed under "
            "load is unknown."
        )
    dense = _titles(
        r for r in runs if r.status == "done" and r.method.startswith(DENSE_SPARSITY_METHODS)
    )
    if dense:
        notes.append(DENSE_SPARSITY_NOTE.format(methods=", ".join(dense)))
    return notes


def results_markdown(results: StudyResults | Mapping[str, Any]) -> str:
    """The study's results as Markdown: a context line, the table, failed runs, column notes."""
    results = as_results(results)
    headers = ["Method"] + [header for header, _, _ in TABLE_COLUMNS]
    lines = ["# Loyalty and robustness of compressed models", "", _context_line(results), ""]
    lines.append("| " + " | ".join(headers) + " |")
    lines.append("|" + "|".join([":---"] + ["---:"] * len(TABLE_COLUMNS)) + "|")
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(results)]
    failures = failed_runs(results.runs)
    if failures:
        lines += ["", "Failed runs:", ""] + [f"- {line}" for line in failures]
    lines += [
        "",
        "Acc: accuracy on the validation set. Label loyalty: share of the teacher's predicted "
        "labels the model reproduces. Prob. loyalty: mean of 1 - sqrt(JSD(teacher || model)) "
        "over the validation set. Flips: share of answers that change between correct and "
        "incorrect relative to the teacher. Speed-up: teacher latency / model latency on CPU, "
        "both timed in the same session (median of repeated batches, round-robin), once per run. "
        "After-attack acc, Queries (mean model queries per attacked "
        "example) and Success rate come from the attack. Percentages; mean ± sample std over "
        "seeds where several ran.",
        "",
    ]
    for note in report_notes(results):
        lines += [note, ""]
    return "\n".join(lines)


def write_report(results: StudyResults | Mapping[str, Any], output_dir: str | Path) -> list[Path]:
    """Write ``results.md`` and the PNG plots into ``output_dir``; return their paths."""
    from loyalkit.study.plots import write_plots

    results = as_results(results)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    plots = write_plots(summarize(results.runs), _teacher_stats(results.teacher), output_dir)
    text = results_markdown(results)
    text += "\n" + "\n".join(f"![{plot.title}]({plot.path.name})" for plot in plots) + "\n"
    markdown = output_dir / "results.md"
    markdown.write_text(text, encoding="utf-8")
    return [markdown] + [plot.path for plot in plots]


# ---------------------------------------------------------------- helpers


def _numeric_fields(run: RunRecord) -> Iterator[tuple[str, float]]:
    for key in RUN_METRICS:
        value = getattr(run, key)
        if _is_number(value):
            yield key, float(value)
    attack = run.attack
    if isinstance(attack, Mapping):
        for key, value in attack.items():
            if _is_number(value):
                yield key, float(value)
    adversarial = run.adversarial_loyalty
    if isinstance(adversarial, Mapping):
        for key, value in adversarial.items():
            if _is_number(value):
                yield (
                    (key if key.startswith("adversarial_") else f"adversarial_{key}"),
                    float(value),
                )


def _timed_under_load(runs: Sequence[RunRecord]) -> list[RunRecord]:
    """The done runs whose speed-up was timed under load, in run order."""
    return [
        run
        for run in runs
        if run.status == "done" and run.speedup is not None and under_load(run.timing)
    ]


def _titles(runs: Iterable[RunRecord]) -> list[str]:
    """The methods' titles, each once, in order."""
    return list(dict.fromkeys(run.title or run.method for run in runs))


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and not (isinstance(value, float) and math.isnan(value))
    )


def _sample_std(series: Sequence[float]) -> float:
    return statistics.stdev(series) if len(series) >= 2 else 0.0


def _teacher_stats(teacher: TeacherRecord | None) -> dict[str, Any]:
    """The teacher as a one-seed summary entry: loyalty 1 and speed-up 1 by construction."""
    if teacher is None:
        return {}
    measured: dict[str, Any] = {
        key: getattr(teacher, key, None) for key in RUN_METRICS
    }  # no loyalty
    stats: dict[str, Any] = {
        key: {"mean": float(value), "std": 0.0}
        for key, value in measured.items()
        if _is_number(value)
    }
    for key, value in (
        ("speedup", 1.0),
        ("label_loyalty", 1.0),
        ("probability_loyalty", 1.0),
        ("flips", 0.0),
    ):
        stats.setdefault(key, {"mean": value, "std": 0.0})
    if isinstance(teacher.attack, Mapping):
        for key, value in teacher.attack.items():
            if _is_number(value):
                stats[key] = {"mean": float(value), "std": 0.0}
    return stats


def _find_key(tree: Any, key: str) -> Any:
    """The first value stored under ``key`` anywhere in a nested dict/list (depth first)."""
    if isinstance(tree, Mapping):
        if key in tree and tree[key] is not None:
            return tree[key]
        children: Any = tree.values()
    elif isinstance(tree, (list, tuple)):
        children = tree
    else:
        return None
    for child in children:
        found = _find_key(child, key)
        if found is not None:
            return found
    return None


def _context_line(results: StudyResults) -> str:
    task = results.task or {}
    parts = [f"Task: {task.get('name', MISSING)}"]
    if task.get("validation_size") is not None:
        parts.append(f"validation size: {task['validation_size']}")
    config = results.config
    attack_config = config.get("attack") if isinstance(config, Mapping) else None
    if isinstance(attack_config, Mapping) and attack_config.get("enabled") is False:
        # The preset's recipe and size stay in the config, but nothing was attacked.
        parts.append("no attack")
    else:
        parts.extend(_attack_parts(results))
    seeds = sorted({run.seed for run in results.runs if run.seed is not None})
    parts.append("seeds: " + (", ".join(map(str, seeds)) if seeds else MISSING))
    return "; ".join(parts) + "."


def _attack_parts(results: StudyResults) -> list[str]:
    parts: list[str] = []
    attack = results.teacher.attack if results.teacher is not None else None
    attacked = attack.get("num_attacked") if isinstance(attack, Mapping) else None
    if attacked is None:
        attacked = _find_key(results.config, "num_examples")
    parts.append(f"attacked examples: {attacked if attacked is not None else MISSING}")
    recipe = _find_key(results.config, "recipe")
    parts.append(f"attack recipe: {recipe if recipe is not None else MISSING}")
    return parts
