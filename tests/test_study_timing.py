"""Issue 14: each finished run is timed once, with the teacher in the same session; reruns reuse the
figure; ``--retime`` times every run again; the load average seen is stored and flagged.

The timer (``loyalkit.study.measure.time_models``) is wrapped to record each call's models and the
latencies it returned: the stored speed-ups are checked against those by hand-division.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from study_helpers import CountingMethods, tiny_study

from loyalkit.study.config import StudyConfig
from loyalkit.study.runner import run_study


class CountingTimer:
    """Wraps ``time_models`` to record the names it timed and what it measured, per call."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from loyalkit.study import measure

        self.calls: list[dict[str, float]] = []
        original = measure.time_models

        def counted(models: Any, batch: Any, **settings: Any) -> dict[str, float]:
            latency = original(models, batch, **settings)
            self.calls.append(dict(latency))
            return latency

        monkeypatch.setattr(measure, "time_models", counted)


def study_data(root: Path, seeds: list[int]) -> dict[str, Any]:
    data = tiny_study(root, seeds=seeds)
    data["methods"] = {"int8-ptq": {}}
    return data


def done_run(root: Path, method: str, seed: int) -> dict[str, Any]:
    path = root / "study" / "methods" / method / f"seed-{seed}" / "done.json"
    run: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))["run"]
    return run


SPEED_FIELDS = ("latency_ms", "speedup", "timing")


def speed(run: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(run[key] for key in SPEED_FIELDS)


def test_a_run_is_timed_once_with_the_teacher_and_reruns_reuse_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    timer = CountingTimer(monkeypatch)
    builds = CountingMethods(monkeypatch)
    first = run_study(StudyConfig.from_dict(study_data(tmp_path, [0])), progress=False)
    assert len(timer.calls) == 1 and set(timer.calls[0]) == {"teacher", "0"}
    measured = timer.calls[0]
    run = first["runs"][0]
    assert run["latency_ms"] == measured["0"]
    assert run["speedup"] == pytest.approx(measured["teacher"] / measured["0"], rel=1e-12)
    assert run["timing"]["teacher_latency_ms"] == measured["teacher"]
    assert run["timing"]["models"] == 2
    assert (run["timing"]["threads"], run["timing"]["repeats"], run["timing"]["warmup"]) == (
        1,
        3,
        1,
    )
    assert run["timing"]["batch_size"] == 8 and run["timing"]["cpu_count"] == os.cpu_count()
    assert first["teacher"]["latency_ms"] == measured["teacher"]
    # Stored with the run: its done.json holds the same figures.
    assert speed(done_run(tmp_path, "int8-ptq", 0)) == speed(run)

    # A rerun with every run finished: nothing is built or timed, the figures are those stored.
    done = tmp_path / "study" / "methods" / "int8-ptq" / "seed-0" / "done.json"
    mtime = done.stat().st_mtime_ns
    again = run_study(StudyConfig.from_dict(study_data(tmp_path, [0])), progress=False)
    assert len(timer.calls) == 1 and builds.calls == [("int8-ptq", 0)]
    assert speed(again["runs"][0]) == speed(run) and done.stat().st_mtime_ns == mtime
    assert again["teacher"]["latency_ms"] == first["teacher"]["latency_ms"]
    assert again["teacher"]["timing"] == first["teacher"]["timing"]

    # A new seed: only it is timed, with the teacher; the finished run keeps its figures.
    grown = run_study(StudyConfig.from_dict(study_data(tmp_path, [0, 1])), progress=False)
    assert len(timer.calls) == 2 and set(timer.calls[1]) == {"teacher", "0"}
    second = timer.calls[1]
    assert speed(grown["runs"][0]) == speed(run) and done.stat().st_mtime_ns == mtime
    new = grown["runs"][1]
    assert (new["seed"], new["latency_ms"]) == (1, second["0"])
    assert new["speedup"] == pytest.approx(second["teacher"] / second["0"], rel=1e-12)
    assert new["timing"]["teacher_latency_ms"] == second["teacher"]
    # The teacher's row shows its latest session.
    assert grown["teacher"]["latency_ms"] == second["teacher"]
    assert speed(done_run(tmp_path, "int8-ptq", 1)) == speed(new)

    # --retime: every finished run again, in one session with the teacher; figures replaced.
    retimed = run_study(
        StudyConfig.from_dict(study_data(tmp_path, [0, 1])), progress=False, retime=True
    )
    assert len(timer.calls) == 3 and set(timer.calls[2]) == {"teacher", "0", "1"}
    third = timer.calls[2]
    for index, key in enumerate(("0", "1")):
        run = retimed["runs"][index]
        assert run["latency_ms"] == third[key]
        assert run["speedup"] == pytest.approx(third["teacher"] / third[key], rel=1e-12)
        assert run["timing"]["teacher_latency_ms"] == third["teacher"]
        assert run["timing"]["models"] == 3
        assert speed(done_run(tmp_path, "int8-ptq", run["seed"])) == speed(run)
    assert builds.calls == [("int8-ptq", 0), ("int8-ptq", 1)]  # timing never retrains
    with pytest.raises(TypeError, match="`retime` must be True or False, got 'yes'"):
        run_study(StudyConfig.from_dict(study_data(tmp_path, [0])), retime="yes")  # type: ignore[arg-type]


def test_load_average_is_stored_and_flagged_and_retime_replaces_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from loyalkit.cli import main

    torch.set_num_threads(1)
    cpus = os.cpu_count()
    assert cpus is not None
    busy = float(4 * cpus)  # four runnable threads per CPU: above any limit of one per CPU
    monkeypatch.setattr(os, "getloadavg", lambda: (busy, 1.0, 1.0))
    path = tmp_path / "study.json"
    path.write_text(json.dumps(study_data(tmp_path, [0])), encoding="utf-8")
    assert main(["study", "run", "--config", str(path), "--quiet"]) == 0
    results = json.loads((tmp_path / "study" / "results.json").read_text(encoding="utf-8"))
    timing = results["runs"][0]["timing"]
    assert (timing["load_before"], timing["load_after"], timing["cpu_count"]) == (busy, busy, cpus)
    table = (tmp_path / "study" / "results.md").read_text(encoding="utf-8")
    row = next(line for line in table.splitlines() if line.startswith("| Q8-PTQ |"))
    speed_cell = row.split(" | ")[4]
    assert speed_cell == f"{results['runs'][0]['speedup']:.2f}x †"
    note = (
        f"Q8-PTQ (seed 0): 1-min load average {busy:.2f} before, {busy:.2f} after timing, "
        f"{cpus} CPUs (limit {cpus:.1f})."
    )
    assert note in table
    assert "† Speed-up timed under load" in table
    capsys.readouterr()

    # A quiet machine and --retime: the figure is replaced and no longer marked.
    monkeypatch.setattr(os, "getloadavg", lambda: (0.25, 1.0, 1.0))
    assert main(["study", "run", "--config", str(path), "--quiet", "--retime"]) == 0
    results = json.loads((tmp_path / "study" / "results.json").read_text(encoding="utf-8"))
    timing = results["runs"][0]["timing"]
    assert (timing["load_before"], timing["load_after"]) == (0.25, 0.25)
    table = (tmp_path / "study" / "results.md").read_text(encoding="utf-8")
    assert "†" not in table and "under load" not in table
    row = next(line for line in table.splitlines() if line.startswith("| Q8-PTQ |"))
    assert row.split(" | ")[4] == f"{results['runs'][0]['speedup']:.2f}x"


def test_a_study_folder_written_before_timing_records_is_timed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    run_study(StudyConfig.from_dict(study_data(tmp_path, [0])), progress=False)
    # As the previous loyalkit left it: done.json without latency or timing (it timed every run
    # at the end of each command and kept the figures only in results.json), no teacher timing.
    done = tmp_path / "study" / "methods" / "int8-ptq" / "seed-0" / "done.json"
    saved = json.loads(done.read_text(encoding="utf-8"))
    for key in SPEED_FIELDS:
        del saved["run"][key]
    done.write_text(json.dumps(saved), encoding="utf-8")
    (tmp_path / "study" / "teacher" / "timing.json").unlink()
    timer = CountingTimer(monkeypatch)
    builds = CountingMethods(monkeypatch)
    results = run_study(StudyConfig.from_dict(study_data(tmp_path, [0])), progress=False)
    assert builds.calls == []  # the model is reused, not rebuilt
    assert len(timer.calls) == 1 and set(timer.calls[0]) == {"teacher", "0"}
    measured = timer.calls[0]
    assert results["runs"][0]["speedup"] == pytest.approx(measured["teacher"] / measured["0"])
    assert results["runs"][0]["timing"]["teacher_latency_ms"] == measured["teacher"]
    run_study(StudyConfig.from_dict(study_data(tmp_path, [0])), progress=False)
    assert len(timer.calls) == 1  # and from then on, not again
