"""The ``>>>`` examples of each metric module, run as doctests as ``evaluate``'s own suite does.

The examples live in ``_KWARGS_DESCRIPTION``, which the class docstring includes; pytest's doctest
collection does not see them. The modules are installed with ``loyalkit metrics install`` into a
temporary HF_HOME and the doctests run in a fresh interpreter with HF_EVALUATE_OFFLINE=1, so the
``evaluate.load("loyalty")`` in an example is the real bare load from the offline cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loyalkit.metrics.modules import METRIC_NAMES, module_path

# As evaluate's tests/test_metric_common.py: import the module evaluate.load would import, then
# doctest.testmod it. Output of failing examples is captured and returned.
DOCTEST_SCRIPT = """
import contextlib, doctest, importlib, io, json, sys
import evaluate
report = {}
for name in sys.argv[1:]:
    module = importlib.import_module(evaluate.loading.evaluation_module_factory(name).module_path)
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        failed, attempted = doctest.testmod(
            module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        )
    report[name] = {"module": module.__name__, "failed": failed, "attempted": attempted,
                    "output": output.getvalue()}
print(json.dumps(report))
"""

# The doctest of label_loyalty expects 0.75 for predictions [0, 1, 2, 2] vs references [0, 1, 1, 2]
# (3 of 4 agree); a copy that expects 0.7 must fail.
TAMPERED = ("{'label_loyalty': 0.75}", "{'label_loyalty': 0.7}")


def hf_env(hf_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HOME=str(hf_home), HF_EVALUATE_OFFLINE="1", HF_HUB_OFFLINE="1")
    return env


def run(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def doctest_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Install the real modules and a tampered label_loyalty (as tampered/...), run all doctests."""
    home = tmp_path_factory.mktemp("hf_home")
    workdir = tmp_path_factory.mktemp("no_metrics_folder_here")
    env = hf_env(home)
    loyalkit = [sys.executable, "-m", "loyalkit", "metrics", "install"]
    run(loyalkit, env, workdir)
    tampered = tmp_path_factory.mktemp("tampered")
    shutil.copytree(module_path("label_loyalty"), tampered / "label_loyalty")
    script = tampered / "label_loyalty" / "label_loyalty.py"
    assert TAMPERED[0] in script.read_text()
    script.write_text(script.read_text().replace(*TAMPERED))
    options = ["--namespace", "tampered", "--name", "label_loyalty", "--spaces", str(tampered)]
    run(loyalkit + options, env, workdir)
    names = [*METRIC_NAMES, "tampered/label_loyalty"]
    done = run([sys.executable, "-c", DOCTEST_SCRIPT, *names], env, workdir)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_module_examples_pass_with_the_bare_offline_load(doctest_report: dict[str, Any], name):
    report = doctest_report[name]
    assert report["module"].startswith(f"evaluate_modules.metrics.evaluate-metric--{name}.")
    assert report["attempted"] > 1
    assert report["failed"] == 0, report["output"]


def test_a_wrong_expected_output_fails(doctest_report: dict[str, Any]):
    report = doctest_report["tampered/label_loyalty"]
    assert report["module"].startswith("evaluate_modules.metrics.tampered--label_loyalty.")
    assert report["failed"] == 1
    assert "{'label_loyalty': 0.7}" in report["output"]
    assert "{'label_loyalty': 0.75}" in report["output"]
