"""``loyalkit metrics install`` (bare ``evaluate.load`` offline) and ``loyalkit metrics push``.

``evaluate`` reads HF_HOME and HF_EVALUATE_OFFLINE when it is imported, so installs and loads run
in fresh subprocesses; nothing here installs into this process's module cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_hub import FakeHub, fingerprint
from scipy.spatial.distance import jensenshannon
from scipy.special import softmax
from scipy.stats import entropy
from sklearn.metrics import accuracy_score

import loyalkit
from loyalkit.cli import build_parser, main
from loyalkit.metrics.modules import METRIC_NAMES, module_path
from loyalkit.metrics.spaces import SpaceError, push_metric_spaces

BIN = Path(sys.executable).parent
WHEEL = f"loyalkit-{loyalkit.__version__}-py3-none-any.whl"
INSTALL_OPTIONS = {"--namespace", "--modules-cache", "--name", "--spaces"}
PUSH_OPTIONS = {"--namespace", "--dry-run", "--private", "--token", "--project", "--wheel"}
PUSH_OPTIONS |= {"--name", "--spaces"}

# Runs in a fresh interpreter: evaluate.load each requested name, compute, report as JSON.
LOAD_SCRIPT = """
import json, sys
import evaluate
requests = json.load(open(sys.argv[1]))
report = {}
for load_name, kwargs in requests:
    try:
        module = evaluate.load(load_name)
    except Exception as err:
        report[load_name] = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        continue
    result = module.compute(**kwargs)
    report[load_name] = {"ok": True, "module": type(module).__module__, "result": result}
print(json.dumps(report, default=str))
"""


def hf_env(hf_home: Path, **extra: str) -> dict[str, str]:
    """This environment without any Hugging Face setting, plus HF_HOME and offline switches."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(hf_home), HF_EVALUATE_OFFLINE="1", HF_HUB_OFFLINE="1", **extra)
    return env


def run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def load_in_fresh_process(
    requests: list[tuple[str, dict[str, Any]]], env: dict[str, str], tmp: Path
) -> dict[str, Any]:
    """Run LOAD_SCRIPT in a working directory without any metrics/ folder."""
    workdir = tmp / "elsewhere"
    workdir.mkdir(exist_ok=True)
    (tmp / "requests.json").write_text(json.dumps(requests))
    done = run([sys.executable, "-c", LOAD_SCRIPT, str(tmp / "requests.json")], env, workdir)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """An HF_HOME seeded by the console script (bare names) and ``-m loyalkit`` (someone/)."""
    home = tmp_path_factory.mktemp("hf_home")
    env = hf_env(home)
    bare = run([str(BIN / "loyalkit"), "metrics", "install"], env, home)
    assert bare.returncode == 0, bare.stderr[-3000:]
    command = [sys.executable, "-m", "loyalkit", "metrics", "install", "--namespace", "someone"]
    namespaced = run(command + ["--name", "loyalty"], env, home)
    assert namespaced.returncode == 0, namespaced.stderr[-3000:]
    return home, bare.stdout


def test_install_places_each_module_in_evaluates_cache_layout(installed: tuple[Path, str]):
    home, stdout = installed
    for name in METRIC_NAMES:
        line = next(line for line in stdout.splitlines() if f'evaluate.load("{name}")' in line)
        cached = Path(line.split()[-1])
        folder = home / "modules" / "evaluate_modules" / "metrics" / f"evaluate-metric--{name}"
        assert cached.parent.parent == folder
        assert re.fullmatch("[0-9a-f]{64}", cached.parent.name)
        assert cached.name == f"{name}.py"
        assert cached.read_bytes() == (module_path(name) / f"{name}.py").read_bytes()
    assert "export HF_EVALUATE_OFFLINE=1" in stdout


def test_bare_load_offline_matches_scipy_and_sklearn(installed: tuple[Path, str], tmp_path: Path):
    rng = np.random.default_rng(7)
    student, teacher = rng.normal(scale=2.0, size=(2, 40, 3))
    labels = rng.integers(0, 3, size=40)
    scores = {"predictions": student.tolist(), "references": teacher.tolist()}
    report = load_in_fresh_process(
        [
            ("loyalty", {**scores, "labels": labels.tolist()}),
            (
                "label_loyalty",
                {
                    "predictions": student.argmax(1).tolist(),
                    "references": teacher.argmax(1).tolist(),
                },
            ),
            ("probability_loyalty", scores),
            ("someone/loyalty", scores),
        ],
        hf_env(installed[0]),
        tmp_path,
    )
    p_student, p_teacher = softmax(student, axis=1), softmax(teacher, axis=1)
    probability = np.mean(1 - jensenshannon(p_teacher, p_student, axis=1))
    agreement = accuracy_score(teacher.argmax(1), student.argmax(1))
    teacher_right, student_right = teacher.argmax(1) == labels, student.argmax(1) == labels
    for load_name, cache_key in [
        ("loyalty", "evaluate-metric--loyalty"),
        ("label_loyalty", "evaluate-metric--label_loyalty"),
        ("probability_loyalty", "evaluate-metric--probability_loyalty"),
        ("someone/loyalty", "someone--loyalty"),
    ]:
        assert report[load_name]["ok"], report[load_name]
        assert report[load_name]["module"].startswith(f"evaluate_modules.metrics.{cache_key}.")
    full = report["loyalty"]["result"]
    assert full["label_loyalty"] == pytest.approx(agreement, abs=1e-12)
    assert full["probability_loyalty"] == pytest.approx(probability, rel=1e-9)
    assert full["kl_divergence"] == pytest.approx(entropy(p_teacher, p_student, axis=1).mean())
    assert full["flips_correct_to_incorrect"] == pytest.approx(
        np.mean(teacher_right & ~student_right)
    )
    assert report["label_loyalty"]["result"] == {"label_loyalty": pytest.approx(agreement)}
    assert report["probability_loyalty"]["result"] == {
        "probability_loyalty": pytest.approx(probability, rel=1e-9)
    }
    assert report["someone/loyalty"]["result"]["probability_loyalty"] == pytest.approx(
        probability, rel=1e-9
    )


def test_bare_load_fails_without_install(tmp_path: Path):
    report = load_in_fresh_process([("loyalty", {})], hf_env(tmp_path / "empty_home"), tmp_path)
    assert not report["loyalty"]["ok"]
    assert "FileNotFoundError" in report["loyalty"]["error"]


def test_install_refuses_a_bad_namespace(tmp_path: Path):
    done = run(
        [sys.executable, "-m", "loyalkit", "metrics", "install", "--namespace", "a/b"],
        hf_env(tmp_path),
        tmp_path,
    )
    assert done.returncode == 1
    assert "`namespace` must be a Hub user or organisation name" in done.stderr


# ---------------------------------------------------------------- push


def test_push_calls_the_hub_with_each_space_and_a_wheel_it_can_install(tmp_path: Path):
    before = {name: fingerprint(module_path(name)) for name in METRIC_NAMES}
    hub = FakeHub(spaces=True)
    plans = push_metric_spaces("someone", api=hub)
    ids = [f"someone/{name}" for name in METRIC_NAMES]
    assert [plan.repo_id for plan in plans] == ids
    assert [call for call, _ in hub.calls] == ["create_repo", "upload_folder"] * 3
    for index, repo_id in enumerate(ids):
        assert hub.calls[2 * index][1] == {
            "repo_id": repo_id,
            "repo_type": "space",
            "space_sdk": "gradio",
            "private": False,
            "exist_ok": True,
        }
        upload = hub.calls[2 * index + 1][1]
        assert upload["repo_id"] == repo_id
        assert upload["repo_type"] == "space"
    for name in METRIC_NAMES:
        uploaded = hub.uploaded[f"someone/{name}"]
        source = module_path(name)
        assert set(uploaded) == {f"{name}.py", "README.md", "app.py", "requirements.txt", WHEEL}
        for file in (f"{name}.py", "README.md", "app.py"):
            assert uploaded[file] == (source / file).read_bytes()
        original = (source / "requirements.txt").read_text().splitlines()
        url = f"https://huggingface.co/spaces/someone/{name}/resolve/main/{WHEEL}"
        expected = [line for line in original if line.strip() != "loyalkit"]
        assert uploaded["requirements.txt"].decode().splitlines() == [
            *expected,
            f"loyalkit @ {url}",
        ]
        wheel_path = tmp_path / WHEEL
        wheel_path.write_bytes(uploaded[WHEEL])
        with zipfile.ZipFile(wheel_path) as wheel:
            names = set(wheel.namelist())
            metadata = wheel.read(f"loyalkit-{loyalkit.__version__}.dist-info/METADATA")
        assert {"loyalkit/cli/__init__.py", "loyalkit/metrics/functional.py"} <= names
        assert f"loyalkit/metrics/{name}/{name}.py" in names
        assert f"Version: {loyalkit.__version__}" in metadata.decode()
    assert {name: fingerprint(module_path(name)) for name in METRIC_NAMES} == before


def test_push_private_with_a_prebuilt_wheel(tmp_path: Path):
    wheel = tmp_path / WHEEL
    shutil.copyfile(_built_wheel(tmp_path), wheel)
    hub = FakeHub(spaces=True)
    push_metric_spaces("org", ["label_loyalty"], private=True, wheel=wheel, api=hub)
    assert hub.calls[0] == (
        "create_repo",
        {
            "repo_id": "org/label_loyalty",
            "repo_type": "space",
            "space_sdk": "gradio",
            "private": True,
            "exist_ok": True,
        },
    )
    assert hub.uploaded["org/label_loyalty"][WHEEL] == wheel.read_bytes()


def _built_wheel(tmp_path: Path) -> Path:
    """loyalkit's wheel, built by pip directly (not by the code under test)."""
    repo = Path(__file__).resolve().parents[1]
    source = tmp_path / "src"
    shutil.copytree(repo, source, ignore=shutil.ignore_patterns(".*", "build", "*.egg-info"))
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        command + ["--no-index", "-q", "-w", str(tmp_path / "dist"), str(source)],
        check=True,
        capture_output=True,
    )
    return tmp_path / "dist" / WHEEL


def test_dry_run_on_the_real_spaces_lists_every_file_and_touches_no_hub(capsys):
    hub = FakeHub(spaces=True)
    plans = push_metric_spaces("someone", dry_run=True, api=hub)
    assert hub.calls == []
    for plan, name in zip(plans, METRIC_NAMES, strict=True):
        assert plan.repo_id == f"someone/{name}"
        sizes = dict(plan.files)
        assert set(sizes) == {f"{name}.py", "README.md", "app.py", "requirements.txt", WHEEL}
        for file in (f"{name}.py", "README.md", "app.py"):
            assert sizes[file] == (module_path(name) / file).stat().st_size

    assert main(["metrics", "push", "--namespace", "someone", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Dry run, nothing uploaded.")
    for name in METRIC_NAMES:
        assert f"someone/{name}  https://huggingface.co/spaces/someone/{name}" in out
        for file in (f"{name}.py", "README.md", "app.py", "requirements.txt", WHEEL):
            assert re.search(rf"^  {re.escape(file)} +[\d,]+ bytes$", out, flags=re.MULTILINE)


def _break_bad_yaml(folder: Path) -> None:
    readme = folder / "README.md"
    readme.write_text(readme.read_text().replace("sdk: gradio", "sdk: [gradio", 1))


def _break_missing_app(folder: Path) -> None:
    (folder / "app.py").unlink()


def _break_missing_tag(folder: Path) -> None:
    readme = folder / "README.md"
    readme.write_text(re.sub(r"\n- metric\n", "\n", readme.read_text(), count=1))


def _break_sdk(folder: Path) -> None:
    readme = folder / "README.md"
    readme.write_text(readme.read_text().replace("sdk: gradio", "sdk: docker", 1))


def _break_app_file(folder: Path) -> None:
    readme = folder / "README.md"
    readme.write_text(readme.read_text().replace("app_file: app.py", "app_file: main.py", 1))


@pytest.mark.parametrize(
    ("breaker", "problem"),
    [
        (_break_bad_yaml, "README.md front matter is not valid YAML"),
        (_break_missing_app, "missing app.py"),
        (_break_missing_tag, "README.md `tags` must include metric"),
        (_break_sdk, "needs `sdk: gradio`, got 'docker'"),
        (_break_app_file, "`app_file: main.py` is not a file in the Space folder"),
    ],
)
def test_a_broken_space_is_refused_before_any_upload(tmp_path: Path, capsys, breaker, problem):
    for name in METRIC_NAMES:
        shutil.copytree(module_path(name), tmp_path / name)
    breaker(tmp_path / "probability_loyalty")
    hub = FakeHub(spaces=True)
    with pytest.raises(SpaceError, match=re.escape(problem)) as raised:
        push_metric_spaces("someone", api=hub, spaces_dir=tmp_path)
    assert "Space 'probability_loyalty'" in str(raised.value)
    assert "Space 'loyalty'" not in str(raised.value)
    assert hub.calls == []

    command = ["metrics", "push", "--namespace", "someone", "--dry-run", "--spaces", str(tmp_path)]
    assert main(command) == 1
    err = capsys.readouterr().err
    assert "Space 'probability_loyalty'" in err and problem in err


# ---------------------------------------------------------------- help and import cost


def _options(parser: Any) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings} - {
        "-h",
        "--help",
    }


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], {"metrics"}),
        (["metrics"], INSTALL_OPTIONS | PUSH_OPTIONS | {"install", "push"}),
        (["metrics", "install"], INSTALL_OPTIONS),
        (["metrics", "push"], PUSH_OPTIONS),
    ],
)
def test_help_exits_zero_and_mentions_every_option(argv: list[str], expected: set[str]):
    done = subprocess.run(
        [str(BIN / "loyalkit"), *argv, "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    for word in expected:
        assert re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", done.stdout), word


def test_parsers_define_exactly_the_documented_options():
    parser = build_parser()
    metrics = parser._subparsers._group_actions[0].choices["metrics"]
    actions = metrics._subparsers._group_actions[0].choices
    assert _options(actions["install"]) == INSTALL_OPTIONS
    assert _options(actions["push"]) == PUSH_OPTIONS


def test_importing_the_cli_and_building_its_parser_does_not_import_torch():
    code = (
        "import sys, loyalkit.cli; loyalkit.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'evaluate', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
