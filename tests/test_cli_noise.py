"""Issue 11, finding 8: the CLI filters known third-party noise at its entry point only, and
``--quiet`` prints only errors and the final table."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from study_helpers import tiny_study

NOISE = ("Failed to load", "_pytree", "Enum subclass", "LOAD REPORT", "pin_memory")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_EVALUATE_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "loyalkit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("noise")
    data = tiny_study(root, seeds=[0], threads=1)
    data["methods"]["int8-ptq"] = {}  # imports torchao: its .so and _pytree messages
    path = root / "study.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def test_known_noise_is_filtered_and_the_rest_shows(config_file: Path) -> None:
    result = run_cli("study", "run", "--config", str(config_file), "--output", str(
        config_file.parent / "loud"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    printed = result.stdout + result.stderr
    assert [n for n in NOISE if n in printed] == []
    assert "study: 100%" in result.stderr  # the progress bars still show
    assert "| Method" in result.stdout  # and the table


def test_quiet_prints_only_the_final_table(config_file: Path) -> None:
    output = config_file.parent / "quiet"
    result = run_cli(
        "study", "run", "--config", str(config_file), "--output", str(output), "--quiet"
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    table = (output / "results.md").read_text(encoding="utf-8")
    assert (
        result.stdout
        == table + f"Written to {output}/ (results.json, results.md, plots, study.log, models)\n"
    )
    assert "'loss'" in (output / "study.log").read_text(encoding="utf-8")  # logs kept in the file


def test_importing_the_library_installs_no_filter() -> None:
    code = (
        "import logging, warnings\n"
        # Third-party imports add their own filters: take them first, then compare.
        "import torch, transformers, datasets, evaluate, accelerate, torchao\n"
        "before = list(warnings.filters)\n"
        "import loyalkit, loyalkit.cli, loyalkit.cli.noise, loyalkit.study.runner, loyalkit.metrics\n"
        "assert warnings.filters == before, 'warnings filters changed'\n"
        "names = ['torchao', 'torch.utils._pytree', 'evaluate.loading', 'transformers.modeling_utils']\n"
        "assert all(not logging.getLogger(n).filters for n in names)\n"
        "print('clean')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.stdout.strip() == "clean", result.stderr
