"""The study's configuration: presets, YAML/JSON round trips, strict validation with named keys."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from loyalkit.study.config import StudyConfig, load_config, preset
from loyalkit.study.methods import REGISTRY
from loyalkit.study.methods.kd_kl import KLKDSettings
from loyalkit.study.methods.kd_logit import LogitKDSettings


def write(path: Path, data: Any) -> Path:
    if path.suffix == ".json":
        path.write_text(json.dumps(data), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.mark.parametrize("name", ["quick", "paper"])
@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json"])
def test_presets_round_trip_through_files(tmp_path: Path, name: str, suffix: str) -> None:
    config = preset(name)
    loaded = load_config(write(tmp_path / f"study{suffix}", config.to_dict()))
    # A relative output_dir in a config file is relative to the file (issue 11).
    config = config.select(output_dir=(tmp_path / config.output_dir).resolve())
    assert loaded == config
    assert loaded.to_dict() == config.to_dict()


def test_quick_preset_runs_every_method_once_per_sparsity() -> None:
    config = preset("quick")
    assert set(config.methods) == set(REGISTRY)
    sparsities = config.methods["magnitude-pruning"].sparsities  # type: ignore[attr-defined]
    methods = [run.method for run in config.runs()]
    expected = [f"magnitude-pruning-{round(100 * s)}" for s in sparsities]
    assert [m for m in methods if m.startswith("magnitude-pruning")] == expected
    assert len(methods) == len(REGISTRY) - 1 + len(sparsities)
    assert preset("paper").seeds == (0, 1, 2)


def test_a_file_overrides_its_preset_and_names_the_methods(tmp_path: Path) -> None:
    data = {
        "preset": "paper",
        "seeds": [3, 4],
        "teacher": {"epochs": 1.5},
        "methods": {"kd-logit": {"alpha": 0.25}, "kd-kl": {"enabled": False}},
        "attack": {"num_examples": 7},
    }
    config = load_config(write(tmp_path / "c.yaml", data))
    paper = preset("paper")
    assert config.seeds == (3, 4)
    assert config.teacher == dataclasses.replace(paper.teacher, epochs=1.5)
    assert config.methods == {
        "kd-logit": dataclasses.replace(paper.methods["kd-logit"], alpha=0.25),
        "kd-kl": dataclasses.replace(paper.methods["kd-kl"], enabled=False),
    }
    assert [run.method for run in config.runs()] == ["kd-logit"]
    assert config.attack.num_examples == 7
    assert config.attack.recipe == paper.attack.recipe
    assert config.task == paper.task


def test_yaml_exponents_without_a_dot_are_numbers(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("teacher:\n  learning_rate: 5e-5\n  model: 1e3x\n", encoding="utf-8")
    config = load_config(path)
    assert config.teacher.learning_rate == 5e-5
    assert config.teacher.model == "1e3x"


def test_methods_as_a_list_take_the_preset_settings() -> None:
    config = StudyConfig.from_dict({"methods": ["kd-kl", "int8-ptq"]})
    assert list(config.methods) == ["int8-ptq", "kd-kl"]  # the study's order
    assert config.methods["kd-kl"] == KLKDSettings()


def test_relative_task_files_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        (tmp_path / "data" / name).write_text("sentence\tlabel\na\t0\n", encoding="utf-8")
    data = {"task": {"train_file": "data/train.tsv", "validation_file": "data/dev.tsv"}}
    config = load_config(write(tmp_path / "c.json", data))
    assert config.task.train_file == tmp_path / "data" / "train.tsv"
    assert config.task.validation_file == tmp_path / "data" / "dev.tsv"


def test_relative_attack_resources_are_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "resources" / "nltk_data").mkdir(parents=True)
    (tmp_path / "resources" / "neighbours.json").write_text("{}", encoding="utf-8")
    data = {"attack": {"synonyms": "resources/neighbours.json", "nltk_data": "resources/nltk_data"}}
    config = load_config(write(tmp_path / "c.yaml", data))
    assert config.attack.synonyms == tmp_path / "resources" / "neighbours.json"
    assert config.attack.nltk_data == tmp_path / "resources" / "nltk_data"
    assert config.to_dict()["attack"]["synonyms"] == str(tmp_path / "resources" / "neighbours.json")


def test_select_restricts_methods_by_name_or_run_id() -> None:
    config = preset("quick").select(methods=["magnitude-pruning-80", "kd-kl"], seeds=[5])
    assert [run.method for run in config.runs()] == ["magnitude-pruning-80", "kd-kl"]
    assert config.seeds == (5,)
    with pytest.raises(ValueError, match=r"--methods: unknown method 'magnitude-pruning-30'"):
        preset("quick").select(methods=["magnitude-pruning-30"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"seed": [0]}, r"config: unknown key 'seed'; valid keys: preset, task, teacher, methods"),
        (
            {"methods": {"pruning": {}}},
            r"methods: unknown method 'pruning'; valid methods: int8-ptq",
        ),
        ({"methods": ["int8-ptq", "distill"]}, r"methods: unknown method 'distill'"),
        (
            {"methods": {"kd-logit": {"alpah": 0.5}}},
            r"methods.kd-logit: unknown key 'alpah'; valid keys: enabled, epochs",
        ),
        ({"methods": {"kd-logit": {"alpha": 1.5}}}, r"methods.kd-logit.alpha: expected a number"),
        (
            {"methods": {"magnitude-pruning": {"sparsities": [0.5, 1.0]}}},
            r"methods.magnitude-pruning.sparsities",
        ),
        ({"methods": {"head-pruning": {"importance": "random"}}}, r"head-pruning.importance"),
        ({"teacher": {"fine_tune": "sometimes"}}, r"teacher.fine_tune: expected true or false"),
        ({"teacher": {"name": "bert"}}, r"teacher: unknown key 'name'; valid keys: model"),
        ({"attack": {"num_examples": 0}}, r"attack.num_examples: expected an int >= 1"),
        ({"attack": {"synonyms": "no/such/synonyms.json"}}, r"attack.synonyms: .*does not exist"),
        ({"task": {"label_col": "y"}}, r"task: unknown key 'label_col'; valid keys: dataset"),
        ({"task": {"text_columns": ["a", "b", "c"]}}, r"task: .*text_columns"),
        ({"seeds": [0, 0]}, r"seeds: a seed is listed twice"),
        ({"threads": 0}, r"threads: expected an int >= 1"),
        ({"preset": "huge"}, r"preset: unknown preset 'huge'; valid presets: quick, paper"),
    ],
)
def test_bad_configs_name_the_key(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(write(tmp_path / "bad.yaml", data))


def test_missing_task_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "train.tsv").write_text("sentence\tlabel\na\t0\n", encoding="utf-8")
    data = {"task": {"train_file": "train.tsv", "validation_file": "dev.tsv"}}
    with pytest.raises(FileNotFoundError, match=r"task.validation_file: no such file: .*dev.tsv"):
        load_config(write(tmp_path / "c.yaml", data))


def test_unreadable_config_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config: no such file"):
        load_config(tmp_path / "absent.yaml")
    (tmp_path / "c.toml").write_text("a = 1", encoding="utf-8")
    with pytest.raises(ValueError, match=r"expected a .yaml, .yml or .json file"):
        load_config(tmp_path / "c.toml")
    (tmp_path / "c.json").write_text("{", encoding="utf-8")
    with pytest.raises(ValueError, match="is not valid JSON"):
        load_config(tmp_path / "c.json")
    (tmp_path / "list.yaml").write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="config: expected a mapping"):
        load_config(tmp_path / "list.yaml")


def test_a_missing_attack_environment_is_a_warning_naming_the_setup(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LOYALKIT_ATTACK_ENV", str(tmp_path / "not-built"))
    (warning,) = preset("quick").check_runnable()
    assert "loyalkit attack setup" in warning and str(tmp_path / "not-built") in warning
    assert "transformers<5" not in warning
    off = dataclasses.replace(
        preset("quick"), attack=dataclasses.replace(preset("quick").attack, enabled=False)
    )
    assert off.check_runnable() == []  # no attack, no environment needed


def test_settings_objects_validate_too() -> None:
    with pytest.raises(ValueError, match=r"methods.kd-logit.student_layers"):
        StudyConfig(methods={"kd-logit": LogitKDSettings(student_layers=0)})
    with pytest.raises(ValueError, match=r"methods.kd-logit: expected LogitKDSettings"):
        StudyConfig(methods={"kd-logit": KLKDSettings()})


def _own_error(build: Any) -> str:
    """The message of the error that compression's own config raises for one bad value."""
    with pytest.raises((TypeError, ValueError)) as raised:
        build()
    return str(raised.value)


@pytest.mark.parametrize(
    ("method", "key", "value", "owner", "build"),
    [
        ("kd-logit", "alpha", 1.5, "DistillationConfig", lambda: _kd(alpha=1.5)),
        ("kd-kl", "temperature", 0, "DistillationConfig", lambda: _kd(temperature=0)),
        ("combined", "alpha", "x", "DistillationConfig", lambda: _kd(alpha="x")),
        ("kd-hidden", "hidden_weight", 0, "DistillationConfig", lambda: _kd(hidden_weight=0)),
        ("kd-hidden", "hidden_normalize", 1, "DistillationConfig", lambda: _kd(hidden_normalize=1)),
        (
            "theseus",
            "replacement_rate",
            1.5,
            "ConstantReplacementSchedule",
            lambda: _replacement("ConstantReplacementSchedule", rate=1.5),
        ),
        (
            "theseus",
            "intercept",
            -0.1,
            "LinearReplacementSchedule",
            lambda: _replacement("LinearReplacementSchedule", intercept=-0.1),
        ),
        (
            "head-pruning",
            "num_batches",
            0,
            "HeadPruningConfig",
            lambda: _head_pruning(num_batches=0),
        ),
        (
            "head-pruning",
            "importance",
            "random",
            "HeadPruningConfig",
            lambda: _head_pruning(importance="random"),
        ),
    ],
)
def test_method_settings_are_validated_by_compressions_own_configs(
    method: str, key: str, value: Any, owner: str, build: Any
) -> None:
    # The study's message is the compression config's own, behind the key: one bound, one place.
    expected = f"methods.{method}.{key}: expected .*; {owner}: " + re.escape(_own_error(build))
    with pytest.raises(ValueError, match=expected):
        StudyConfig(methods={method: REGISTRY[method](**{key: value})})


def _kd(**arguments: Any) -> Any:
    from loyalkit.compression import DistillationConfig

    return DistillationConfig(**arguments)


def _replacement(kind: str, **arguments: Any) -> Any:
    from loyalkit.compression import module_replacement

    return getattr(module_replacement, kind)(**arguments)


def _head_pruning(**arguments: Any) -> Any:
    from loyalkit.callbacks import HeadPruningConfig

    return HeadPruningConfig(schedule={0: 0.5}, **arguments)


def test_every_methods_defaults_pass_compressions_own_checks():
    # The study skips building compression's config for a value left at its default (torch's
    # import cost); this checks those defaults against compression once.
    from dataclasses import fields

    from loyalkit.study.methods import REGISTRY

    built = 0
    for method in REGISTRY.values():
        settings = method()
        for item in fields(settings):
            check = item.metadata.get("check")
            if check is not None and "build" in getattr(check, "keywords", {}):
                check.keywords["build"](getattr(settings, item.name))
                built += 1
    assert built >= 10
