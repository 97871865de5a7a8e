"""``loyalkit study``: help for every option, printed configs that load back, run and report."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import yaml
from study_helpers import tiny_study

from loyalkit.cli import SUBCOMMAND_MODULES, build_parser, main
from loyalkit.study.config import load_config, preset


def study_actions() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    study = commands.choices["study"]
    actions = next(a for a in study._actions if isinstance(a, argparse._SubParsersAction))
    return dict(actions.choices)


def test_the_study_replaces_the_demo() -> None:
    assert "loyalkit.cli.study" in SUBCOMMAND_MODULES
    assert "loyalkit.cli_demo" not in SUBCOMMAND_MODULES


@pytest.mark.parametrize("action", ["run", "config", "report", "push"])
def test_help_explains_every_option(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser = study_actions()[action]
    with pytest.raises(SystemExit) as exit_info:
        main(["study", action, "--help"])
    assert exit_info.value.code == 0
    text = "".join(capsys.readouterr().out.split())  # argparse wraps lines, at hyphens too
    for option in parser._actions:
        assert option.help, f"{option.option_strings or option.dest} has no help"
        for string in option.option_strings:
            assert string in text
    if action == "run":
        for option in ("--config", "--preset", "--output", "--seeds", "--methods", "--threads"):
            assert option in text
        assert "magnitude-pruning-50" in text and "results.json" in text
        assert "Rerunningthesamecommandskipsfinishedruns" in text


def test_study_help_lists_the_actions(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["study", "--help"])
    text = capsys.readouterr().out
    for action in ("run", "config", "report", "push"):
        assert f"loyalkit study {action}" in text


@pytest.mark.parametrize("name", ["quick", "paper"])
def test_printed_config_is_accepted_by_load_config(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["study", "config", "--preset", name]) == 0
    path = tmp_path / "study.yaml"
    path.write_text(capsys.readouterr().out, encoding="utf-8")
    expected = preset(name).select(output_dir=(tmp_path / preset(name).output_dir).resolve())
    assert load_config(path) == expected  # output_dir: relative to the config file
    assert main(["study", "config", "--preset", name, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == preset(name).to_dict()


def test_config_merges_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"seeds": [1, 2], "methods": ["kd-kl"]}), encoding="utf-8")
    assert main(["study", "config", "--config", str(path)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["seeds"] == [1, 2] and list(printed["methods"]) == ["kd-kl"]


def test_a_bad_config_is_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"methods": {"distillation": {}}}), encoding="utf-8")
    assert main(["study", "run", "--config", str(path)]) == 1
    error = capsys.readouterr().err
    assert "methods: unknown method 'distillation'; valid methods: int8-ptq" in error
    assert main(["study", "run", "--methods", "pruning", "--no-attack"]) == 1
    assert "--methods: unknown method 'pruning'" in capsys.readouterr().err


def test_run_then_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tiny_study(tmp_path, methods=["int8-ptq"], seeds=[0, 1])
    config["attack"] = {"enabled": True}  # switched off below by --no-attack
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    output = tmp_path / "out"
    args = ["study", "run", "--config", str(path), "--output", str(output), "--seeds", "3"]
    assert main([*args, "--no-attack", "--quiet", "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    results = json.loads((output / "results.json").read_text(encoding="utf-8"))
    assert [(r["method"], r["seed"], r["status"]) for r in results["runs"]] == [
        ("int8-ptq", 3, "done")
    ]
    assert results["config"]["attack"]["enabled"] is False
    assert results["config"]["threads"] == 1
    markdown = (output / "results.md").read_text(encoding="utf-8")
    assert markdown.splitlines()[0] in printed
    (output / "results.md").unlink()
    for plot in output.glob("*.png"):
        plot.unlink()
    assert main(["study", "report", str(output)]) == 0
    assert (output / "results.md").read_text(encoding="utf-8") == markdown
    assert list(output.glob("*.png"))
    assert main(["study", "report", str(tmp_path / "nowhere")]) == 1
    assert "no results.json" in capsys.readouterr().err
