"""Both installs import ``loyalkit.*`` from the mapped folders, and the installed modules load."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import loyalkit.metrics

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json, evaluate, loyalkit, loyalkit.callbacks, loyalkit.compression, loyalkit.metrics
from loyalkit.metrics import module_path
path = module_path("probability_loyalty")
module = evaluate.load(str(path))
value = module.compute(predictions=[[0.9, 0.1]], references=[[0.6, 0.4]], input_type="probabilities")
print(json.dumps({"loyalkit": loyalkit.__file__, "metrics": loyalkit.metrics.__file__,
                  "module": str(path), "files": sorted(p.name for p in path.iterdir()),
                  "value": value["probability_loyalty"]}))
"""


def run_probe(env: dict[str, str], cwd: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, cwd=cwd, capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_the_test_environment_is_an_editable_install_of_this_checkout():
    # make test installs with `pip install -e .`: the namespace must map onto the top-level folders.
    assert Path(loyalkit.metrics.__file__).resolve() == REPO / "metrics" / "__init__.py"


@pytest.fixture(scope="module")
def regular_install(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install --target`` of this checkout (not editable), in a temporary folder."""
    target = tmp_path_factory.mktemp("install") / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return target


def test_regular_install_imports_and_loads_the_packaged_modules(regular_install, tmp_path):
    target = regular_install
    env = {**os.environ, "PYTHONPATH": str(target)}
    result = run_probe(env, cwd=tmp_path)  # outside the checkout, so only the install can answer
    for key in ("loyalkit", "metrics", "module"):
        assert result[key].startswith(str(target)), result
    assert {"probability_loyalty.py", "README.md", "app.py", "requirements.txt"} <= set(
        result["files"]
    )
    # 1 - JS distance of (0.6, 0.4) and (0.9, 0.1), natural log, computed by hand:
    # m = (0.75, 0.25); JSD = 0.5*(0.6 ln 0.8 + 0.4 ln 1.6) + 0.5*(0.9 ln 1.2 + 0.1 ln 0.4).
    import math

    jsd = 0.5 * (0.6 * math.log(0.8) + 0.4 * math.log(1.6)) + 0.5 * (
        0.9 * math.log(1.2) + 0.1 * math.log(0.4)
    )
    assert abs(result["value"] - (1 - math.sqrt(jsd))) < 1e-12


def test_importing_the_packages_is_light_and_leaves_the_environment_alone():
    probe = (
        "import json, os, sys; before = dict(os.environ); "
        "import loyalkit, loyalkit.cli, loyalkit.compression, loyalkit.callbacks; "
        "print(json.dumps({'heavy': [m for m in ('torch', 'torchao', 'transformers', 'textattack') "
        "if m in sys.modules], 'env_changed': before != dict(os.environ)}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert json.loads(completed.stdout) == {"heavy": [], "env_changed": False}


ATTACK_PROBE = """
import json, sys
import torch
from transformers import AutoTokenizer, BertForSequenceClassification
import loyalkit
from loyalkit.robustness import AttackConfig, AttackWorker, OfflineResources
from loyalkit.robustness.isolated import worker_script
torch.set_num_threads(1)
folder, resources = sys.argv[1], sys.argv[2]
model = BertForSequenceClassification.from_pretrained(folder).eval()
tokenizer = AutoTokenizer.from_pretrained(folder)
rows = [(0, ("music ending ugly the film",), 0), (1, ("a great film",), 1)]
offline = OfflineResources(nltk_data=resources + "/nltk_data", cache_dir=resources + "/textattack")
with AttackWorker() as worker:
    report = worker.attack(model, tokenizer, rows, AttackConfig("deepwordbug", resources=offline))
print(json.dumps({"loyalkit": loyalkit.__file__, "worker": str(worker_script()),
                  "statuses": [e["status"] for e in report.examples],
                  "queries": [e["queries"] for e in report.examples]}))
"""


def test_regular_install_attacks_through_the_isolated_environment(regular_install, tmp_path):
    """A non-editable install, run outside the checkout, finds its worker in site-packages and
    attacks through the environment of `loyalkit attack setup`."""
    from attack_helpers import make_classifier, offline_resources

    folder = make_classifier(tmp_path / "classifier", steps=10)
    offline_resources(tmp_path / "resources")
    env = {**os.environ, "PYTHONPATH": str(regular_install)}
    completed = subprocess.run(
        [sys.executable, "-c", ATTACK_PROBE, str(folder), str(tmp_path / "resources")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    assert result["loyalkit"].startswith(str(regular_install))
    helped = subprocess.run(
        [sys.executable, "-m", "loyalkit", "attack", "--help"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert helped.returncode == 0 and "setup" in helped.stdout and "run" in helped.stdout
    assert result["worker"] == str(regular_install / "loyalkit" / "robustness" / "attack_worker.py")
    assert len(result["statuses"]) == 2 and "error" not in result["statuses"]
    assert all(q is None or q > 0 for q in result["queries"])
