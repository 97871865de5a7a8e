"""The study's report: per-method mean/std over seeds, the Table-1 shaped Markdown table, the plots.

The results below are written by hand (section D of the study's results.json): two methods, three
seeds each, one of them failed. Means and sample standard deviations are computed here with
``statistics`` and numpy (ddof=1), and the expected table cells are written out by hand.
"""

from __future__ import annotations

import copy
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.image import imread
from PIL import Image

from loyalkit.study.plots import PLOT_FILES, write_plots
from loyalkit.study.report import (
    failed_runs,
    format_cell,
    results_markdown,
    summarize,
    table_rows,
    write_report,
)


def attack(after: float, queries: float, success: float) -> dict[str, float | int]:
    return {
        "original_accuracy": 0.8,
        "after_attack_accuracy": after,
        "attack_success_rate": success,
        "mean_queries": queries,
        "mean_words_perturbed": 0.1,
        "num_succeeded": 5,
        "num_failed": 4,
        "num_skipped": 1,
        "num_errors": 0,
        "num_attacked": 10,
        "num_requested": 10,
    }


def q8(seed: int, acc, label, prob, flips, speedup, after, queries, success) -> dict[str, Any]:
    return {
        "method": "int8-ptq",
        "title": "Q8-PTQ",
        "seed": seed,
        "status": "done",
        "error": None,
        "model_dir": f"methods/int8-ptq/seed-{seed}/model",
        "layers": 6,
        "parameters": 22713216,
        "size_on_disk_mb": 23.1,
        "latency_ms": 7.0,
        "speedup": speedup,
        "train_seconds": 0.0,
        "accuracy": acc,
        "label_loyalty": label,
        "probability_loyalty": prob,
        "flips": flips,
        "kl_divergence": 0.02,
        "attack": attack(after, queries, success),
        "adversarial_loyalty": None,
    }


def kd(seed: int, acc, label, prob, flips, speedup) -> dict[str, Any]:
    return {
        "method": "kd",
        "title": "KD",
        "seed": seed,
        "status": "done",
        "error": None,
        "model_dir": f"methods/kd/seed-{seed}/model",
        "layers": 3,
        "parameters": 11_000_000,
        "size_on_disk_mb": 42.0,
        "latency_ms": 6.0,
        "speedup": speedup,
        "train_seconds": 30.0,
        "accuracy": acc,
        "label_loyalty": label,
        "probability_loyalty": prob,
        "flips": flips,
        "kl_divergence": 0.05,
        "attack": None,
        "adversarial_loyalty": None,
    }


RESULTS: dict[str, Any] = {
    "loyalkit_version": "0.1.0",
    "created": "2026-11-24T23:00:00+00:00",
    "config": {"attack": {"recipe": "textfooler-offline", "num_examples": 10}, "seeds": [0, 1, 2]},
    "task": {
        "name": "sst2",
        "num_labels": 2,
        "label_names": ["negative", "positive"],
        "validation_size": 872,
        "text_columns": ["sentence"],
    },
    "teacher": {
        "model_dir": "teacher",
        "layers": 6,
        "parameters": 22713216,
        "size_on_disk_mb": 86.7,
        "latency_ms": 12.3,
        "accuracy": 0.83,
        "attack": attack(0.081, 89.6, 0.9),
    },
    "runs": [
        q8(0, 0.80, 0.90, 0.85, 0.05, 1.7, 0.40, 90.0, 0.50),
        q8(1, 0.82, 0.92, 0.88, 0.07, 1.8, 0.44, 92.0, 0.45),
        q8(2, 0.81, 0.94, 0.91, 0.06, 1.9, 0.36, 94.0, 0.55),
        kd(0, 0.78, 0.85, 0.90, 0.10, 1.9),
        kd(1, 0.80, 0.87, 0.94, 0.12, 2.1),
        {
            "method": "kd",
            "title": "KD",
            "seed": 2,
            "status": "failed",
            "error": 'Traceback (most recent call last):\n  File "x.py", line 1\nRuntimeError: boom\n',
            "model_dir": None,
        },
    ],
}

# Written out by hand from the numbers above (mean ± sample std, percentages).
EXPECTED_ROWS = [
    ["Teacher", "6", "22.7", "86.7", "1.00x", "83.0", "100.0", "100.0", "0.0", "8.1", "89.6", "90.0"],
    ["Q8-PTQ", "6", "22.7", "23.1", "1.80x ± 0.10", "81.0 ± 1.0", "92.0 ± 2.0", "88.0 ± 3.0",
     "6.0 ± 1.0", "40.0 ± 4.0", "92.0 ± 2.0", "50.0 ± 5.0"],
    ["KD (2/3 seeds)", "3", "11.0", "42.0", "2.00x ± 0.14", "79.0 ± 1.4", "86.0 ± 1.4",
     "92.0 ± 2.8", "11.0 ± 1.4", "—", "—", "—"],
]  # fmt: skip
HEADER = (
    "| Method | Layers | Params (M) | Size (MB) | Speed-up | Acc | Label loyalty | Prob. loyalty "
    "| Flips | After-attack acc | Queries | Success rate |"
)


def done_values(method: str, key: str) -> list[float]:
    values = []
    for run in RESULTS["runs"]:
        if run["method"] == method and run["status"] == "done":
            source = run["attack"] if key in (run.get("attack") or {}) else run
            values.append(source[key])
    return values


# ---------------------------------------------------------------- summarize


def test_summarize_means_and_sample_stds_match_statistics_and_numpy():
    summary = summarize(RESULTS["runs"])
    assert [(e["method"], e["title"], e["seeds"], e["failed"]) for e in summary] == [
        ("int8-ptq", "Q8-PTQ", 3, 0),
        ("kd", "KD", 2, 1),
    ]
    keys = {
        "int8-ptq": ["accuracy", "label_loyalty", "probability_loyalty", "flips", "speedup",
                     "kl_divergence", "layers", "parameters", "size_on_disk_mb", "latency_ms",
                     "after_attack_accuracy", "mean_queries", "attack_success_rate",
                     "num_succeeded", "original_accuracy"],
        "kd": ["accuracy", "label_loyalty", "probability_loyalty", "flips", "speedup",
               "train_seconds"],
    }  # fmt: skip
    for entry in summary:
        for key in keys[entry["method"]]:
            values = done_values(entry["method"], key)
            assert entry[key]["mean"] == pytest.approx(statistics.mean(values), abs=1e-12), key
            assert entry[key]["std"] == pytest.approx(statistics.stdev(values), abs=1e-12), key
            assert entry[key]["std"] == pytest.approx(np.std(values, ddof=1), abs=1e-12), key
    # KD ran no attack: no attack metrics in its entry.
    assert "after_attack_accuracy" not in summary[1]
    # Hand-checked: KD accuracy 0.78, 0.80 -> mean 0.79, std sqrt(2 * 0.01**2 / 1) = 0.014142.
    assert summary[1]["accuracy"]["std"] == pytest.approx(0.0141421356, abs=1e-9)


def test_one_seed_has_std_zero_and_no_plus_minus():
    summary = summarize([RESULTS["runs"][0]])
    assert summary[0]["accuracy"] == {"mean": 0.80, "std": 0.0}
    row = table_rows({"runs": [RESULTS["runs"][0]]})[0]
    assert row == ["Q8-PTQ", "6", "22.7", "23.1", "1.70x", "80.0", "90.0", "85.0", "5.0",
                   "40.0", "90.0", "50.0"]  # fmt: skip


def test_adversarial_loyalty_is_flattened_with_a_prefix():
    run = copy.deepcopy(RESULTS["runs"][0])
    run["adversarial_loyalty"] = {"label_loyalty": 0.5, "adversarial_accuracy": 0.25}
    entry = summarize([run])[0]
    assert entry["adversarial_label_loyalty"] == {"mean": 0.5, "std": 0.0}
    assert entry["adversarial_accuracy"] == {"mean": 0.25, "std": 0.0}


def test_summarize_refuses_runs_without_a_method():
    with pytest.raises(ValueError, match=r"`runs\[1\]` must be a dict with a 'method'"):
        summarize([RESULTS["runs"][0], {"seed": 0}])


# ---------------------------------------------------------------- the table


def test_table_cells_teacher_first_then_methods_in_run_order():
    assert table_rows(RESULTS) == EXPECTED_ROWS


def test_markdown_holds_context_table_and_failed_runs():
    text = results_markdown(RESULTS)
    lines = text.splitlines()
    assert (
        "Task: sst2; validation size: 872; attacked examples: 10; "
        "attack recipe: textfooler-offline; seeds: 0, 1, 2." in lines
    )
    start = lines.index(HEADER)
    assert lines[start + 1] == "|:---|" + "|".join(["---:"] * 11) + "|"
    for offset, row in enumerate(EXPECTED_ROWS, start=2):
        assert lines[start + offset] == "| " + " | ".join(row) + " |"
    assert "- KD (`kd`), seed 2: RuntimeError: boom" in lines
    assert lines.index("Failed runs:") > start + len(EXPECTED_ROWS)


def test_context_line_says_no_attack_when_the_attack_was_off():
    results = copy.deepcopy(RESULTS)
    results["config"] = {"attack": {"enabled": False, "recipe": "deepwordbug", "num_examples": 80}}
    results["teacher"]["attack"] = None
    lines = results_markdown(results).splitlines()
    assert "Task: sst2; validation size: 872; no attack; seeds: 0, 1, 2." in lines


def test_missing_values_and_a_method_whose_every_seed_failed():
    results = copy.deepcopy(RESULTS)
    results["teacher"]["attack"] = None
    del results["teacher"]["size_on_disk_mb"]
    results["runs"] = [
        {"method": "pkd", "title": "Pruned", "seed": 0, "status": "failed", "error": "E: x"}
    ]
    rows = table_rows(results)
    assert rows[0][3] == "—" and rows[0][9:] == ["—", "—", "—"]
    assert rows[1] == ["Pruned (0/1 seeds)"] + ["—"] * 11
    assert failed_runs(results["runs"]) == ["Pruned (`pkd`), seed 0: E: x"]


@pytest.mark.parametrize(
    ("stat", "seeds", "kind", "expected"),
    [
        ({"mean": 0.8456, "std": 0.01234}, 3, "percent", "84.6 ± 1.2"),
        ({"mean": 0.8456, "std": 0.0}, 1, "percent", "84.6"),
        ({"mean": 91.64, "std": 2.0}, 2, "number", "91.6 ± 2.0"),
        ({"mean": 1.756, "std": 0.0}, 2, "times", "1.76x ± 0.00"),
        ({"mean": 22713216.0, "std": 0.0}, 3, "millions", "22.7"),
        ({"mean": 4.0, "std": 1.4142}, 2, "count", "4 ± 1"),
        (None, 2, "percent", "—"),
        (0.5, 1, "percent", "50.0"),
    ],
)
def test_format_cell(stat, seeds: int, kind: str, expected: str):
    assert format_cell(stat, seeds, kind) == expected


# ---------------------------------------------------------------- report files and plots


def test_write_report_writes_markdown_and_three_non_blank_pngs(tmp_path: Path):
    paths = write_report(RESULTS, tmp_path / "report")
    assert [p.name for p in paths] == ["results.md", *PLOT_FILES]
    text = paths[0].read_text(encoding="utf-8")
    assert text.startswith(results_markdown(RESULTS))
    for name in PLOT_FILES:
        assert f"]({name})" in text
    for path in paths[1:]:
        pixels = imread(path)
        assert pixels.shape == (480, 640, 4)  # 6.4 x 4.8 inches at 100 dpi
        assert np.unique(pixels.reshape(-1, 4), axis=0).shape[0] > 20  # not one flat colour
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (640, 480)


def test_plotted_points_are_the_summary_means_and_stds(tmp_path: Path):
    teacher = {
        "accuracy": {"mean": 0.83, "std": 0.0},
        "probability_loyalty": {"mean": 1.0, "std": 0.0},
        "label_loyalty": {"mean": 1.0, "std": 0.0},
        "speedup": {"mean": 1.0, "std": 0.0},
        "after_attack_accuracy": {"mean": 0.081, "std": 0.0},
    }
    accuracy, after, speed = write_plots(summarize(RESULTS["runs"]), teacher, tmp_path)

    def expected(method: str, key: str, scale: float) -> tuple[float, float]:
        values = [scale * v for v in done_values(method, key)]
        return statistics.mean(values), statistics.stdev(values)

    got = {p.label: p for p in accuracy.points}
    assert list(got) == ["Teacher", "Q8-PTQ", "KD"]
    assert (got["Teacher"].x, got["Teacher"].y) == pytest.approx((100.0, 83.0))
    for label, method in (("Q8-PTQ", "int8-ptq"), ("KD", "kd")):
        x, xerr = expected(method, "probability_loyalty", 100.0)
        y, yerr = expected(method, "accuracy", 100.0)
        point = got[label]
        assert (point.x, point.y, point.xerr, point.yerr) == pytest.approx((x, y, xerr, yerr))

    # Only the teacher and Q8-PTQ were attacked: two bars.
    assert [p.label for p in after.points] == ["Teacher", "Q8-PTQ"]
    mean, std = expected("int8-ptq", "after_attack_accuracy", 100.0)
    assert (after.points[0].y, after.points[0].yerr) == pytest.approx((8.1, 0.0))
    assert (after.points[1].y, after.points[1].yerr) == pytest.approx((mean, std))
    assert (after.points[1].y, after.points[1].yerr) == pytest.approx((40.0, 4.0))

    got = {p.label: p for p in speed.points}
    for label, method in (("Q8-PTQ", "int8-ptq"), ("KD", "kd")):
        x, xerr = expected(method, "label_loyalty", 100.0)
        y, yerr = expected(method, "speedup", 1.0)
        point = got[label]
        assert (point.x, point.y, point.xerr, point.yerr) == pytest.approx((x, y, xerr, yerr))
    assert (got["Teacher"].x, got["Teacher"].y) == pytest.approx((100.0, 1.0))


def test_plots_without_attack_results_still_write_a_labelled_png(tmp_path: Path):
    results = copy.deepcopy(RESULTS)
    results["teacher"]["attack"] = None
    results["runs"] = [kd(0, 0.7, 0.8, 0.9, 0.1, 2.0)]
    paths = write_report(results, tmp_path)
    after = paths[1 + PLOT_FILES.index("after_attack_accuracy.png")]
    assert np.unique(imread(after).reshape(-1, 4), axis=0).shape[0] > 20


def test_report_plots_and_card_modules_import_neither_torch_nor_pyplot(tmp_path: Path):
    code = (
        "import sys, json\n"
        "from loyalkit.study import report, plots, model_card\n"
        "imported = sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules)\n"
        f"report.write_report(json.loads({_json_results()!r}), {str(tmp_path)!r})\n"
        "print(imported, 'matplotlib.pyplot' in sys.modules, 'torch' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[-2] == "[] False False"


def _json_results() -> str:
    import json

    return json.dumps(RESULTS)


def test_the_report_reads_through_the_records() -> None:
    from loyalkit.study.records import StudyResults

    # Records and the parsed results.json give the same table; a misspelt key is named, not blank.
    assert table_rows(StudyResults.from_dict(RESULTS)) == EXPECTED_ROWS
    typo = copy.deepcopy(RESULTS["runs"][0])
    typo["acuracy"] = typo.pop("accuracy")
    with pytest.raises(ValueError, match=r"runs\[0\]: unknown key 'acuracy'"):
        summarize([typo])


# ---------------------------------------------------------------- speed notes (issue 14)

QUIET = {"teacher_latency_ms": 12.3, "load_before": 0.5, "load_after": 1.0, "cpu_count": 2}


def timed(results: dict[str, Any], **loads: dict[str, Any]) -> dict[str, Any]:
    """``results`` with every done run timed quietly, but for ``seed_N=timing`` of Q8-PTQ."""
    results = copy.deepcopy(results)
    for run in results["runs"]:
        if run["status"] == "done":
            run["timing"] = dict(QUIET)
            if run["method"] == "int8-ptq" and f"seed_{run['seed']}" in loads:
                run["timing"] = {**QUIET, **loads[f"seed_{run['seed']}"]}
    return results


def test_a_speedup_timed_under_load_is_marked_and_its_load_given_in_a_note():
    # 2 CPUs: the limit is a load of 2.0; seed 1 saw 2.25 after its timing.
    results = timed(RESULTS, seed_1={"load_before": 1.5, "load_after": 2.25})
    rows = table_rows(results)
    assert rows[1][4] == "1.80x ± 0.10 †"  # one of Q8-PTQ's three seeds was under load
    assert rows[2][4] == "2.00x ± 0.14" and rows[0][4] == "1.00x"
    assert [row[:4] + row[5:] for row in rows] == [row[:4] + row[5:] for row in EXPECTED_ROWS]
    lines = results_markdown(results).splitlines()
    assert (
        "† Speed-up timed under load: the 1-minute load average before or after the timing "
        "exceeded 1 per CPU, so other processes competed for the cores and the figure may be off "
        "either way (`loyalkit study run --retime` on a quiet machine times it again). "
        "Q8-PTQ (seed 1): 1-min load average 1.50 before, 2.25 after timing, 2 CPUs (limit 2.0)."
    ) in lines
    # At the limit is not above it; the reading before the timing counts as well as the one after.
    assert table_rows(timed(RESULTS, seed_1={"load_after": 2.0}))[1][4] == "1.80x ± 0.10"
    assert table_rows(timed(RESULTS, seed_0={"load_before": 2.01}))[1][4] == "1.80x ± 0.10 †"
    # On 8 CPUs the same load is quiet.
    busy_on_8 = timed(RESULTS, seed_1={"load_after": 2.25, "cpu_count": 8})
    assert table_rows(busy_on_8)[1][4] == "1.80x ± 0.10"
    assert not any("under load" in line for line in results_markdown(busy_on_8).splitlines())


def test_runs_timed_under_the_same_load_share_one_footnote_entry():
    # One busy session timed Q8-PTQ seeds 0 and 2 and KD seed 1; Q8-PTQ seed 1 saw another load.
    session = {"timed_at": "2026-12-07T10:00:00+00:00", "load_before": 4.5, "load_after": 4.1}
    results = timed(RESULTS, seed_0=session, seed_1={"load_after": 3.0}, seed_2=session)
    kd_1 = next(r for r in results["runs"] if r["method"] == "kd" and r["seed"] == 1)
    kd_1["timing"] = {**QUIET, **session}
    footnote = next(line for line in results_markdown(results).splitlines() if "under load" in line)
    assert footnote.endswith(
        "times it again). Q8-PTQ (seeds 0, 2), KD (seed 1): 1-min load average 4.50 before, "
        "4.10 after timing, 2 CPUs (limit 2.0); Q8-PTQ (seed 1): 1-min load average 0.50 before, "
        "3.00 after timing, 2 CPUs (limit 2.0)."
    )


def test_speedups_without_a_load_record_are_named():
    # RESULTS were written without timing records (as results.json before schema 3).
    lines = results_markdown(RESULTS).splitlines()
    assert (
        "Speed-ups of Q8-PTQ, KD were timed without a record of the machine's load (results "
        "written before loyalkit recorded it): whether they were timed under load is unknown."
    ) in lines
    assert table_rows(RESULTS) == EXPECTED_ROWS  # no mark: unknown is not "under load"
    assert not any(
        line.startswith("Speed-ups of") for line in results_markdown(timed(RESULTS)).splitlines()
    )


def test_magnitude_pruning_speed_is_shown_and_explained():
    results = timed(RESULTS)
    pruned = kd(0, 0.75, 0.8, 0.85, 0.15, 0.99)
    pruned.update(method="magnitude-pruning-50", title="MP-50%", model_dir="m", layers=6)
    results["runs"].append(pruned)
    rows = table_rows(results)
    assert rows[-1][0] == "MP-50%" and rows[-1][4] == "0.99x"
    text = results_markdown(results)
    note = next(line for line in text.splitlines() if line.startswith("MP-50%: "))
    for part in (
        "magnitude pruning sets weights to zero but keeps them in the dense weight matrices",
        "so no speed-up is expected (about 1.0x)",
        "PyTorch's 2:4 semi-structured sparsity has no CPU kernels (supported NVIDIA GPUs only; "
        "published at about 1.3x end to end on an A100, not measured by loyalkit)",
    ):
        assert part in note
    assert not any(line.startswith("MP-50%: ") for line in results_markdown(RESULTS).splitlines())


def test_the_speed_plot_labels_a_method_timed_under_load(tmp_path: Path):
    results = timed(RESULTS, seed_2={"load_before": 9.0})
    summary = summarize(results["runs"])
    assert [(e["method"], e["speedup_under_load"]) for e in summary] == [("int8-ptq", 1), ("kd", 0)]
    accuracy, _, speed = write_plots(summary, None, tmp_path)
    assert [p.label for p in speed.points] == ["Q8-PTQ (timed under load)", "KD"]
    assert [p.label for p in accuracy.points] == ["Q8-PTQ", "KD"]  # speed only
