"""The study end to end on a tiny local teacher: results.json checked against sklearn, scipy, hand
counts and os.stat on the saved models; resumability; crash isolation; teacher/data checks."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from scipy.stats import entropy
from sklearn.metrics import accuracy_score
from study_helpers import LABEL_NAMES, CountingMethods, read_split, saved_model_logits, tiny_study
from transformers import AutoConfig, AutoModelForSequenceClassification

from loyalkit.study import methods as study_methods
from loyalkit.study.config import StudyConfig
from loyalkit.study.runner import run_study

RUN_FIELDS = {
    "method", "title", "seed", "status", "error", "model_dir", "layers", "parameters",
    "size_on_disk_mb", "latency_ms", "speedup", "timing", "train_seconds", "accuracy",
    "label_loyalty", "probability_loyalty", "flips", "kl_divergence", "attack",
    "adversarial_loyalty",
}  # fmt: skip
TEACHER_FIELDS = {
    "model_dir", "layers", "parameters", "size_on_disk_mb", "latency_ms", "timing", "accuracy",
    "attack",
}  # fmt: skip


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("study")
    config = StudyConfig.from_dict(tiny_study(root))
    results = run_study(config, progress=False)
    return results, root


def logits_of(model_dir: Path, texts: list[str]) -> np.ndarray:
    """The reloaded model's logits, with the tokenizer saved beside it."""
    return saved_model_logits(model_dir, texts).double().numpy()


def bert_parameters(config: Any) -> int:
    """BERT classifier parameters counted by hand from its config."""
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    embeddings = (v + config.max_position_embeddings + config.type_vocab_size) * h + 2 * h
    layer = 4 * (h * h + h) + (h * i + i) + (i * h + h) + 2 * (2 * h)
    pooler, head = h * h + h, h * config.num_labels + config.num_labels
    return embeddings + config.num_hidden_layers * layer + pooler + head


def model_bytes(model_dir: Path) -> int:
    names = [n for n in os.listdir(model_dir) if n.endswith((".safetensors", ".bin"))]
    names += [n for n in os.listdir(model_dir) if n == "openvino_model.xml"]
    return sum(os.stat(model_dir / n).st_size for n in [*names, "config.json"])


def test_results_json_has_every_field(study: tuple[dict[str, Any], Path]) -> None:
    results, root = study
    saved = json.loads((root / "study" / "results.json").read_text(encoding="utf-8"))
    assert {"loyalkit_version", "created", "config", "task", "teacher", "runs", "summary"} <= set(
        saved
    )
    assert set(saved["teacher"]) >= TEACHER_FIELDS
    assert saved["task"]["num_labels"] == 2
    assert saved["task"]["label_names"] == list(LABEL_NAMES)
    assert saved["task"]["validation_size"] == 24
    assert [(r["method"], r["seed"]) for r in saved["runs"]] == [
        ("int8-ptq", 0), ("int8-ptq", 1), ("kd-logit", 0), ("kd-logit", 1)
    ]  # fmt: skip
    for run in saved["runs"]:
        assert set(run) == RUN_FIELDS
        assert run["status"] == "done" and run["error"] is None, run["error"]
        assert run["attack"] is None and run["adversarial_loyalty"] is None
    assert StudyConfig.from_dict(saved["config"]) == StudyConfig.from_dict(tiny_study(root))
    assert [(s["method"], s["seeds"]) for s in saved["summary"]] == [
        ("int8-ptq", 2),
        ("kd-logit", 2),
    ]
    assert (root / "study" / "results.md").is_file()
    assert list((root / "study").glob("*.png"))
    assert "kd-logit seed 1" in (root / "study" / "study.log").read_text(encoding="utf-8")


def test_accuracy_and_loyalty_recomputed_from_reloaded_models(
    study: tuple[dict[str, Any], Path],
) -> None:
    results, root = study
    texts, gold = read_split(root / "dev.tsv")
    teacher = logits_of(root / "study" / "teacher", texts)
    teacher_labels = teacher.argmax(1)
    assert results["teacher"]["accuracy"] == pytest.approx(accuracy_score(gold, teacher_labels))
    assert results["teacher"]["accuracy"] > 0.7  # a real teacher, not a coin
    for run in results["runs"]:
        student = logits_of(root / "study" / run["model_dir"], texts)
        labels = student.argmax(1)
        assert run["accuracy"] == pytest.approx(accuracy_score(gold, labels))
        assert run["label_loyalty"] == pytest.approx(accuracy_score(teacher_labels, labels))
        p_teacher, p_student = softmax(teacher, axis=1), softmax(student, axis=1)
        js = jensenshannon(p_teacher, p_student, axis=1)
        assert run["probability_loyalty"] == pytest.approx(1 - js.mean(), abs=1e-6)
        kl = entropy(p_teacher, p_student, axis=1).mean()
        assert run["kl_divergence"] == pytest.approx(kl, abs=1e-6)
        flips = np.mean((labels == gold) != (teacher_labels == gold))
        assert run["flips"] == pytest.approx(flips)


def test_size_parameters_layers_and_speedup(study: tuple[dict[str, Any], Path]) -> None:
    results, root = study
    teacher_dir = root / "study" / "teacher"
    teacher_config = AutoModelForSequenceClassification.from_pretrained(teacher_dir).config
    teacher = results["teacher"]
    assert teacher["parameters"] == bert_parameters(teacher_config)
    assert teacher["layers"] == 2
    assert teacher["size_on_disk_mb"] == pytest.approx(model_bytes(teacher_dir) / 2**20)
    for run in results["runs"]:
        model_dir = root / "study" / run["model_dir"]
        config = AutoConfig.from_pretrained(model_dir)
        assert run["layers"] == config.num_hidden_layers
        assert run["parameters"] == bert_parameters(config)
        assert run["size_on_disk_mb"] == pytest.approx(model_bytes(model_dir) / 2**20)
        # Every run was timed with the teacher in the study's one timing session.
        assert run["timing"]["teacher_latency_ms"] == teacher["latency_ms"]
        assert run["speedup"] == pytest.approx(teacher["latency_ms"] / run["latency_ms"])
        assert run["train_seconds"] > 0
    ptq, kd = results["runs"][0], results["runs"][2]
    assert kd["layers"] == 1 and ptq["layers"] == 2
    # int8 weights: about a quarter of the float bytes (the IR's XML, a fixed ~100 KB of graph,
    # outweighs them in a model this small)
    weights = (root / "study" / ptq["model_dir"] / "openvino_model.bin").stat().st_size
    assert weights < 0.4 * (teacher_dir / "model.safetensors").stat().st_size
    # The int8 run is OpenVINO IR whose matrix weights are stored as int8 constants.
    ir = (root / "study" / ptq["model_dir"] / "openvino_model.xml").read_text(encoding="utf-8")
    assert ir.count('element_type="i8"') >= 2 * 6  # 2 layers x (Q, K, V, O, FFN in, FFN out)


def test_rerun_skips_finished_runs_and_redoes_interrupted_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = CountingMethods(monkeypatch)
    config = StudyConfig.from_dict(tiny_study(tmp_path))
    first = run_study(config, progress=False)
    assert sorted(counter.calls) == [
        ("int8-ptq", 0),
        ("int8-ptq", 1),
        ("kd-logit", 0),
        ("kd-logit", 1),
    ]
    methods = tmp_path / "study" / "methods"
    done = {p: p.stat().st_mtime_ns for p in methods.glob("*/seed-*/done.json")}
    assert len(done) == 4
    # kd-logit seed 1 was interrupted: no done.json, a half-written file left behind
    interrupted = methods / "kd-logit" / "seed-1"
    (interrupted / "done.json").unlink()
    (interrupted / "partial.bin").write_bytes(b"half")
    counter.calls.clear()
    second = run_study(config, progress=False)
    assert counter.calls == [("kd-logit", 1)]
    assert not (interrupted / "partial.bin").exists()
    for path, mtime in done.items():
        if path.parent != interrupted:
            assert path.stat().st_mtime_ns == mtime
    for a, b in zip(first["runs"], second["runs"], strict=True):
        assert (a["method"], a["seed"], b["status"]) == (b["method"], b["seed"], "done")
        if (a["method"], a["seed"]) != ("kd-logit", 1):
            assert a["accuracy"] == b["accuracy"] and a["label_loyalty"] == b["label_loyalty"]
    # changed settings make a finished run stale: it is redone, the others are kept
    counter.calls.clear()
    changed = tiny_study(tmp_path)
    changed["methods"]["kd-logit"]["temperature"] = 4.0
    run_study(StudyConfig.from_dict(changed), progress=False)
    assert counter.calls == [("kd-logit", 0), ("kd-logit", 1)]


def test_a_crash_in_one_run_is_reported_and_the_others_finish(tmp_path: Path) -> None:
    data = tiny_study(tmp_path, seeds=[0])
    # the teacher has 2 layers: a 2-layer student only fails when the run starts
    data["methods"]["kd-logit"]["student_layers"] = 2
    results = run_study(StudyConfig.from_dict(data), progress=False)
    ptq, kd = results["runs"]
    assert ptq["status"] == "done"
    assert kd["status"] == "failed"
    assert "Traceback" in kd["error"] and "methods.kd-logit.student_layers" in kd["error"]
    assert kd["accuracy"] is None and kd["model_dir"] is None
    saved = json.loads((tmp_path / "study" / "results.json").read_text(encoding="utf-8"))
    assert saved["runs"][1]["status"] == "failed"
    assert "failed" in (tmp_path / "study" / "results.md").read_text(encoding="utf-8").lower()
    folder = tmp_path / "study" / "methods" / "kd-logit" / "seed-0"
    assert (folder / "failed.json").is_file() and not (folder / "done.json").exists()


def test_a_failed_run_is_retried_on_the_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = StudyConfig.from_dict(tiny_study(tmp_path, seeds=[0]))
    kd_logit = study_methods.REGISTRY["kd-logit"]
    original = kd_logit.build

    def broken(*args: Any) -> None:
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(kd_logit, "build", broken)
    first = run_study(config, progress=False)
    assert [r["status"] for r in first["runs"]] == ["done", "failed"]
    assert "RuntimeError: out of memory, say" in first["runs"][1]["error"]
    monkeypatch.setattr(kd_logit, "build", original)
    second = run_study(config, progress=False)
    assert [r["status"] for r in second["runs"]] == ["done", "done"]


def test_label_column_that_does_not_exist(tmp_path: Path) -> None:
    data = tiny_study(tmp_path)
    data["task"]["label_column"] = "sentiment"
    with pytest.raises(ValueError, match=r"`label_column`: column\(s\) 'sentiment' not in"):
        run_study(StudyConfig.from_dict(data), progress=False)


def test_teacher_whose_labels_do_not_match_the_data(tmp_path: Path) -> None:
    data = tiny_study(tmp_path)
    teacher = Path(data["teacher"]["model"])
    config = json.loads((teacher / "config.json").read_text(encoding="utf-8"))
    config["id2label"] = {"0": "negative", "1": "neutral"}
    config["label2id"] = {"negative": 0, "neutral": 1}
    other = tmp_path / "other-teacher"
    shutil.copytree(teacher, other)
    (other / "config.json").write_text(json.dumps(config), encoding="utf-8")
    data["teacher"] = {**data["teacher"], "model": str(other), "fine_tune": False}
    with pytest.raises(
        ValueError, match=r"teacher.model: .* its id2label names \['negative', 'neutral'\]"
    ):
        run_study(StudyConfig.from_dict(data), progress=False)
    # three classes against two: the count is named
    config["id2label"] = {"0": "negative", "1": "neutral", "2": "positive"}
    (other / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ValueError, match=r"num_labels is 3 .* the data has 2"):
        run_study(StudyConfig.from_dict(data), progress=False)


def test_auto_fine_tunes_a_teacher_whose_labels_do_not_match(tmp_path: Path) -> None:
    data = tiny_study(tmp_path, seeds=[0], methods=["int8-ptq"])
    teacher = Path(data["teacher"]["model"])
    config = json.loads((teacher / "config.json").read_text(encoding="utf-8"))
    config["id2label"] = {"0": "bad", "1": "good"}
    config["label2id"] = {"bad": 0, "good": 1}
    (teacher / "config.json").write_text(json.dumps(config), encoding="utf-8")
    data["teacher"].update(epochs=1, learning_rate=1e-3)
    results = run_study(StudyConfig.from_dict(data), progress=False)
    assert results["teacher"]["fine_tuned"] is True
    saved = AutoModelForSequenceClassification.from_pretrained(tmp_path / "study" / "teacher")
    assert saved.config.id2label == dict(enumerate(LABEL_NAMES))


def test_under_accelerate_launch_two_processes(tmp_path: Path) -> None:
    """Training runs in 2 CPU processes (gloo); the main process measures and writes alone."""
    import subprocess
    import sys

    import loyalkit

    data = tiny_study(tmp_path, seeds=[0])
    config_file = tmp_path / "study.json"
    config_file.write_text(json.dumps(data), encoding="utf-8")
    launcher = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        "--num_processes=2", "--num_machines=1", "--mixed_precision=no",
        "--dynamo_backend=no", f"--main_process_port={free_port()}",
    ]  # fmt: skip
    script = Path(loyalkit.__file__).parent / "__main__.py"
    command = [*launcher, str(script), "study", "run", "--config", str(config_file), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads((tmp_path / "study" / "results.json").read_text(encoding="utf-8"))
    assert results["environment"]["processes"] == 2
    assert [(r["method"], r["status"]) for r in results["runs"]] == [
        ("int8-ptq", "done"), ("kd-logit", "done")
    ]  # fmt: skip
    # 64 examples, batch 16 per process, 2 processes: 2 optimizer steps (4 in one process)
    log = (tmp_path / "study" / "study.log").read_text(encoding="utf-8")
    assert "step 2: {'train_runtime'" in log and "step 4:" not in log
    assert done.stdout.count("| KD-L1 |") == 1  # one report, from the main process


def free_port() -> int:
    """A free TCP port on localhost (closed again before the launcher binds it)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_attack_columns_checked_against_the_saved_models(tmp_path: Path) -> None:
    from loyalkit.robustness.attack_runner import SUMMARY_KEYS

    data = tiny_study(tmp_path, seeds=[0], methods=["int8-ptq"])
    data["attack"] = {"enabled": True, "recipe": "deepwordbug", "num_examples": 8}
    results = run_study(StudyConfig.from_dict(data), progress=False)
    (run,) = results["runs"]
    assert run["status"] == "done", run["error"]
    assert set(results["teacher"]["attack"]) == set(SUMMARY_KEYS)
    assert set(run["attack"]) == set(SUMMARY_KEYS)
    study_dir = tmp_path / "study"
    reports = {
        "teacher": (study_dir / "teacher", study_dir / "teacher" / "attack.json"),
        "int8-ptq": (
            study_dir / run["model_dir"],
            study_dir / "methods/int8-ptq/seed-0/attack.json",
        ),
    }
    for name, (model_dir, report_file) in reports.items():
        report = json.loads(report_file.read_text(encoding="utf-8"))
        examples = report["examples"]
        summary = results["teacher"]["attack"] if name == "teacher" else run["attack"]
        statuses = [e["status"] for e in examples]
        attacked = len(examples) - statuses.count("error")
        assert summary["num_attacked"] == attacked == 8
        assert summary["after_attack_accuracy"] == pytest.approx(
            statuses.count("failed") / attacked
        )
        succeeded = [e for e in examples if e["status"] == "succeeded"]
        assert succeeded, "deepwordbug fooled no example: the check below would be empty"
        # the saved model really is fooled by the saved adversarial texts
        perturbed = logits_of(model_dir, [e["perturbed_text"] for e in succeeded]).argmax(1)
        original = logits_of(model_dir, [e["original_text"] for e in succeeded]).argmax(1)
        gold = np.array([e["ground_truth"] for e in succeeded])
        assert (original == gold).all() and (perturbed != gold).all()
    # adversarial loyalty: the teacher's adversarial examples fed to the student
    teacher_report = json.loads(reports["teacher"][1].read_text(encoding="utf-8"))
    succeeded = [e for e in teacher_report["examples"] if e["status"] == "succeeded"]
    student = logits_of(reports["int8-ptq"][0], [e["perturbed_text"] for e in succeeded]).argmax(1)
    expected = accuracy_score([e["perturbed_label"] for e in succeeded], student)
    assert run["adversarial_loyalty"]["adversarial_label_loyalty"] == pytest.approx(expected)
    assert run["adversarial_loyalty"]["num_adversarial"] == len(succeeded)
    # a rerun reuses the teacher's attack from disk (not attacked again) for adversarial loyalty
    mtime = reports["teacher"][1].stat().st_mtime_ns
    (study_dir / "methods/int8-ptq/seed-0/done.json").unlink()
    again = run_study(StudyConfig.from_dict(data), progress=False)
    assert reports["teacher"][1].stat().st_mtime_ns == mtime
    assert again["teacher"]["attack"] == results["teacher"]["attack"]
    assert again["runs"][0]["adversarial_loyalty"] == run["adversarial_loyalty"]


@pytest.mark.parametrize(
    ("architectures", "id2label", "auto", "problem"),
    [
        (["BertModel"], {0: "LABEL_0", 1: "LABEL_1"}, True, "bare encoder"),
        (None, {0: "LABEL_0", 1: "LABEL_1"}, True, "bare encoder"),
        (["BertForSequenceClassification"], {0: "Negative", 1: "POSITIVE"}, False, None),
        (["BertForSequenceClassification"], {0: "LABEL_0", 1: "LABEL_1"}, False, None),
        (["BertForSequenceClassification"], {0: "positive", 1: "negative"}, True, "id2label"),
        (["BertForSequenceClassification"], {0: "a", 1: "b", 2: "c"}, True, "num_labels is 3"),
    ],
)
def test_when_the_teacher_needs_fine_tuning(
    architectures: list[str] | None, id2label: dict[int, str], auto: bool, problem: str | None
) -> None:
    from transformers import BertConfig

    from loyalkit.study.config import TeacherConfig
    from loyalkit.study.teacher import teacher_needs_fine_tuning

    config = BertConfig(architectures=architectures, id2label=id2label)
    assert teacher_needs_fine_tuning(TeacherConfig(fine_tune="auto"), config, LABEL_NAMES) is auto
    assert teacher_needs_fine_tuning(TeacherConfig(fine_tune=True), config, LABEL_NAMES) is True
    if problem is None:
        assert (
            teacher_needs_fine_tuning(TeacherConfig(fine_tune=False), config, LABEL_NAMES) is False
        )
    else:
        with pytest.raises(ValueError, match=f"teacher.model: .*{problem}.*fine_tune"):
            teacher_needs_fine_tuning(TeacherConfig(fine_tune=False), config, LABEL_NAMES)


def test_time_models_times_each_model_and_restores_the_thread_count() -> None:
    from tiny_bert import tiny_bert

    from loyalkit.study.measure import time_models

    models = {"two": tiny_bert(num_layers=2), "one": tiny_bert(num_layers=1)}
    batch = {"input_ids": torch.randint(5, 100, (4, 12))}
    torch.set_num_threads(1)
    calls = {name: 0 for name in models}
    for name, model in models.items():
        model.register_forward_hook(
            lambda *args, name=name: calls.__setitem__(name, calls[name] + 1)
        )
    latency = time_models(models, batch, threads=2, warmup=2, repeats=5)
    assert torch.get_num_threads() == 1
    assert set(latency) == {"two", "one"} and all(v > 0 for v in latency.values())
    assert calls == {"two": 7, "one": 7}
