"""Issue 11, findings 1-4: resume is never stale, reused models are verified, one run per folder,
paths are relative to the config file."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from sklearn.metrics import accuracy_score
from study_helpers import LABEL_NAMES, CountingMethods, read_split, saved_model_logits, tiny_study

from loyalkit.study.config import StudyConfig, load_config
from loyalkit.study.runner import run_study


def one_run(root: Path, **overrides: Any) -> dict[str, Any]:
    data = tiny_study(root, seeds=[0], **overrides)
    data["methods"] = {"kd-logit": data["methods"]["kd-logit"]}
    # Flipped validation labels make the teacher worse than the majority class: not checked here.
    data["teacher"]["min_margin_over_majority"] = None
    return data


def accuracy_of(model_dir: Path, split: Path) -> float:
    """Accuracy of the reloaded model on ``split``, by sklearn."""
    texts, labels = read_split(split)
    predicted = saved_model_logits(model_dir, texts).argmax(-1).numpy()
    return float(accuracy_score(labels, predicted))


def flip_labels(path: Path) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    flipped = [lines[0]]
    for line in lines[1:]:
        text, label = line.rsplit("\t", 1)
        flipped.append(f"{text}\t{LABEL_NAMES[1 - LABEL_NAMES.index(label)]}")
    path.write_text("\n".join(flipped) + "\n", encoding="utf-8")


def test_changed_data_invalidates_exactly_the_runs_it_affects(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = CountingMethods(monkeypatch)
    config = StudyConfig.from_dict(one_run(tmp_path))
    run_study(config, progress=False)
    teacher_done = tmp_path / "study" / "teacher" / "done.json"
    teacher_mtime = teacher_done.stat().st_mtime_ns
    assert counter.calls == [("kd-logit", 0)]
    # Validation labels flipped in place: the student is measured again (the KD student
    # kept its old number), the teacher is not retrained (it never read that file).
    flip_labels(tmp_path / "dev.tsv")
    results = run_study(config, progress=False)
    assert counter.calls == [("kd-logit", 0)] * 2
    assert teacher_done.stat().st_mtime_ns == teacher_mtime
    model = tmp_path / "study" / results["runs"][0]["model_dir"]
    assert results["runs"][0]["accuracy"] == pytest.approx(accuracy_of(model, tmp_path / "dev.tsv"))
    teacher = tmp_path / "study" / "teacher"
    assert results["teacher"]["accuracy"] == pytest.approx(
        accuracy_of(teacher, tmp_path / "dev.tsv")
    )
    # An edited train file: the teacher's fine-tuning data changed (fine_tune forced), so the
    # teacher and the run are redone.
    data = one_run(tmp_path)
    data["teacher"]["fine_tune"] = True
    data["teacher"]["epochs"] = 1
    config = StudyConfig.from_dict(data)
    run_study(config, progress=False)
    teacher_mtime = teacher_done.stat().st_mtime_ns
    counter.calls.clear()
    run_study(config, progress=False)
    assert counter.calls == [] and teacher_done.stat().st_mtime_ns == teacher_mtime
    train = tmp_path / "train.tsv"
    train.write_text(train.read_text(encoding="utf-8") + "a new sentence\tpositive\n", "utf-8")
    run_study(config, progress=False)
    assert counter.calls == [("kd-logit", 0)]
    assert teacher_done.stat().st_mtime_ns != teacher_mtime


def test_resume_from_any_working_folder_and_spelling_of_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = one_run(tmp_path)
    folder = tmp_path / "configs"
    folder.mkdir()
    # Every path relative to the config file, the teacher given as a relative folder (finding 4).
    data["task"] = {"train_file": "../train.tsv", "validation_file": "../dev.tsv"}
    data["teacher"]["model"] = "../teacher"
    data["output_dir"] = "../study"
    (folder / "study.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
    counter = CountingMethods(monkeypatch)
    monkeypatch.chdir(folder)
    run_study(load_config("study.yaml"), progress=False)
    assert counter.calls == [("kd-logit", 0)]
    for where, spelling in [
        (tmp_path, "configs/study.yaml"),
        (tmp_path.parent, f"{tmp_path.name}/configs/../configs/study.yaml"),
        (folder, "./study.yaml"),
    ]:
        monkeypatch.chdir(where)
        config = load_config(spelling)
        assert config.teacher.model == str((tmp_path / "teacher").resolve())
        assert config.output_dir == (tmp_path / "study").resolve()
        run_study(config, progress=False)
    assert counter.calls == [("kd-logit", 0)]


def test_relative_teacher_model_resolves_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "sub" / "models" / "teacher").mkdir(parents=True)
    path = tmp_path / "sub" / "study.yaml"
    for model, expected in [
        ("models/teacher", str((tmp_path / "sub" / "models" / "teacher").resolve())),
        ("./absent-folder", str((tmp_path / "sub" / "absent-folder").resolve())),
        ("user/name", "user/name"),  # a Hub id stays a Hub id
        ("minilm", "minilm"),
    ]:
        path.write_text(yaml.safe_dump({"teacher": {"model": model}}), encoding="utf-8")
        assert load_config(path).teacher.model == expected


def corrupt(path: Path, how: str) -> None:
    content = bytearray(path.read_bytes())
    if how == "bit rot":
        middle = len(content) // 2
        content[middle : middle + 8] = bytes(b ^ 0xFF for b in content[middle : middle + 8])
    else:
        content = content[: len(content) // 2]
    path.write_bytes(bytes(content))


@pytest.mark.parametrize("how", ["bit rot", "truncated"])
def test_damaged_models_are_redone_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    counter = CountingMethods(monkeypatch)
    config = StudyConfig.from_dict(one_run(tmp_path))
    first = run_study(config, progress=False)
    run_folder = tmp_path / "study" / "methods" / "kd-logit" / "seed-0"
    done = json.loads((run_folder / "done.json").read_text(encoding="utf-8"))
    weights = run_folder / "model" / "model.safetensors"
    import hashlib

    assert done["files"]["model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    corrupt(weights, how)
    with caplog.at_level(logging.WARNING, logger="loyalkit.study"):
        second = run_study(config, progress=False)
    assert counter.calls == [("kd-logit", 0)] * 2
    assert "saved model changed since it was measured (model.safetensors)" in caplog.text
    assert second["runs"][0]["status"] == "done"
    assert second["runs"][0]["accuracy"] == first["runs"][0]["accuracy"]
    assert np.isfinite(second["runs"][0]["speedup"])
    # The saved teacher is checked too.
    corrupt(tmp_path / "study" / "teacher" / "model.safetensors", how)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="loyalkit.study"):
        third = run_study(config, progress=False)
    assert "saved teacher" in caplog.text and third["teacher"]["accuracy"] is not None


def test_a_second_study_run_on_a_folder_in_use_is_refused(tmp_path: Path) -> None:
    from loyalkit.study.lock import StudyLockedError

    config = StudyConfig.from_dict(one_run(tmp_path))
    output = tmp_path / "study"
    output.mkdir()
    lock = output / "study.lock"
    alive = {"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}
    lock.write_text(json.dumps(alive), encoding="utf-8")
    with pytest.raises(StudyLockedError, match=rf"in use by .*pid {os.getpid()}.*--output"):
        run_study(config, progress=False)
    elsewhere = {**alive, "host": "another-machine"}
    lock.write_text(json.dumps(elsewhere), encoding="utf-8")
    with pytest.raises(StudyLockedError, match="delete"):
        run_study(config, progress=False)
    # A lock left by a process that has ended (kill -9, crash) is stale: taken over.
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                           capture_output=True, text=True)  # fmt: skip
    lock.write_text(json.dumps({**alive, "pid": int(ended.stdout)}), encoding="utf-8")
    results = run_study(config, progress=False)
    assert results["runs"][0]["status"] == "done"
    assert not lock.exists()


def test_push_refuses_a_model_changed_since_it_was_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from loyalkit.cli import main

    run_study(StudyConfig.from_dict(one_run(tmp_path)), progress=False)
    output = tmp_path / "study"
    push = ["study", "push", str(output), "--method", "kd-logit", "--seed", "0"]
    push += ["--repo-id", "you/tiny-kd", "--dry-run"]
    assert main(push) == 0
    capsys.readouterr()
    corrupt(output / "methods" / "kd-logit" / "seed-0" / "model" / "model.safetensors", "bit rot")
    assert main(push) == 1
    error = capsys.readouterr().err
    assert "is not the one the study measured: model.safetensors changed" in error
