"""Typed records of results.json: the studies kept in benchmarks/ read back unchanged; versions and
bad keys are named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loyalkit.study.records import SCHEMA_VERSION, RunRecord, StudyResults, read_results

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize(("study", "written_as"), [("sst2_study", 3), ("smollm2_study", 1)])
def test_kept_results_read_back_as_records_unchanged(study: str, written_as: int) -> None:
    raw = json.loads((BENCHMARKS / study / "results.json").read_text(encoding="utf-8"))
    assert raw.get("schema_version", 1) == written_as  # version 1 had no schema_version key
    results = read_results(BENCHMARKS / study)
    assert results.schema_version == SCHEMA_VERSION == 3
    assert len(results.runs) == len(raw["runs"])
    for record, run in zip(results.runs, raw["runs"], strict=True):
        assert isinstance(record, RunRecord)
        assert (record.method, record.seed, record.accuracy) == (
            run["method"],
            run["seed"],
            run["accuracy"],
        )
    assert results.teacher.accuracy == raw["teacher"]["accuracy"]
    if written_as == SCHEMA_VERSION:
        assert results.to_dict() == raw
        return
    # The migration adds the version and an empty timing record (the load was not recorded).
    expected = {
        "schema_version": 3,
        **raw,
        "teacher": {**raw["teacher"], "timing": None},
        "runs": [{**run, "timing": None} for run in raw["runs"]],
    }
    assert results.to_dict() == expected


def test_versions_and_keys_are_checked() -> None:
    raw = json.loads((BENCHMARKS / "smollm2_study" / "results.json").read_text(encoding="utf-8"))
    current = StudyResults.from_dict(raw).to_dict()
    assert StudyResults.from_dict(current).to_dict() == current
    assert list(current)[0] == "schema_version"
    with pytest.raises(ValueError, match=r"schema_version 4 is not one this loyalkit reads "
                       r"\(1, 2, 3\); a newer one needs a newer loyalkit"):  # fmt: skip
        StudyResults.from_dict({**raw, "schema_version": 4})
    runs = [dict(run) for run in raw["runs"]]
    runs[2]["acuracy"] = 0.5
    with pytest.raises(ValueError, match=r"results.runs\[2\]: unknown key 'acuracy'"):
        StudyResults.from_dict({**raw, "runs": runs})
    del runs[2]["acuracy"], runs[2]["method"]
    with pytest.raises(ValueError, match=r"results.runs\[2\]: missing key 'method'"):
        StudyResults.from_dict({**raw, "runs": runs})
    with pytest.raises(ValueError, match=r"results: unknown key 'sumary'"):
        StudyResults.from_dict({**raw, "sumary": []})
    teacher = {k: v for k, v in raw["teacher"].items() if k != "model_dir"}
    with pytest.raises(ValueError, match=r"results.teacher: missing key 'model_dir'"):
        StudyResults.from_dict({**raw, "teacher": teacher})


def test_a_new_run_record_is_a_failed_run_until_measured() -> None:
    record = RunRecord(method="kd-logit", title="KD-L3", seed=1)
    assert record.to_dict()["status"] == "failed"
    assert [k for k, v in record.to_dict().items() if v is not None] == [
        "method",
        "title",
        "seed",
        "status",
    ]


def test_timing_is_a_typed_record_checked_by_name() -> None:
    from loyalkit.study.records import TimingRecord

    raw = json.loads((BENCHMARKS / "smollm2_study" / "results.json").read_text(encoding="utf-8"))
    timing = {"timed_at": "2026-12-07T16:00:00+00:00", "teacher_latency_ms": 20.0, "models": 3,
              "threads": 1, "warmup": 2, "repeats": 7, "batch_size": 32, "load_before": 0.5,
              "load_after": 2.5, "cpu_count": 2}  # fmt: skip
    runs = [dict(run) for run in raw["runs"]]
    runs[0]["timing"] = timing
    results = StudyResults.from_dict({**raw, "schema_version": 3, "runs": runs})
    assert isinstance(results.runs[0].timing, TimingRecord)
    assert results.runs[0].timing.load_after == 2.5 and results.runs[1].timing is None
    assert results.to_dict()["runs"][0]["timing"] == timing  # written back as it was read
    runs[0]["timing"] = {**timing, "load_befor": 0.5}
    with pytest.raises(ValueError, match=r"results.runs\[0\].timing: unknown key 'load_befor'"):
        StudyResults.from_dict({**raw, "runs": runs})
