"""Adding a study method is adding one file: it reaches ``loyalkit study config``, runs, and
appears in the results table."""

from __future__ import annotations

import importlib.util
import json
import pkgutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest
import torch
import yaml
from study_helpers import tiny_study
from transformers import AutoModelForSequenceClassification

import loyalkit.study.methods as study_methods
from loyalkit.cli import main
from loyalkit.study.config import StudyConfig
from loyalkit.study.methods import REGISTRY, MethodSettings, register
from loyalkit.study.runner import run_study

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_method_file() -> str:
    """The README's example method ("Adding a study method"): what a contributor would write."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Adding a study method") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```\n", start)]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.fixture
def one_shot(tmp_path: Path) -> Iterator[ModuleType]:
    """The README's method file, written to disk and imported (its decorator registers it)."""
    saved = dict(REGISTRY)
    path = tmp_path / "one_shot_pruning.py"
    path.write_text(readme_method_file(), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("one_shot_pruning", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]
    REGISTRY.clear()
    REGISTRY.update(saved)


def test_every_method_file_of_the_package_registers_its_method() -> None:
    files = {m.name for m in pkgutil.iter_modules(study_methods.__path__)}
    methods = {f for f in files if not f.startswith("_")}
    registered = {m.__module__.rsplit(".", 1)[-1] for m in REGISTRY.values()}
    assert registered == methods
    assert list(REGISTRY)[0] == "int8-ptq" and list(REGISTRY)[-1] == "combined"


def test_a_method_without_a_name_or_a_build_is_refused_when_registered() -> None:
    @dataclass(frozen=True)
    class Nameless(MethodSettings):
        pass

    with pytest.raises(TypeError, match=r"Nameless: a method needs a class attribute `name`"):
        register(Nameless)

    @dataclass(frozen=True)
    class Unbuilt(MethodSettings):
        name = "unbuilt"

        def title(self, variant: float | None) -> str:
            return "U"

    with pytest.raises(TypeError, match=r"Unbuilt \('unbuilt'\) must define `build`"):
        register(Unbuilt)
    assert "unbuilt" not in REGISTRY


def test_a_new_method_file_appears_in_the_printed_config(
    one_shot: ModuleType, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["study", "config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["methods"]["one-shot-pruning"] == {
        "enabled": True,
        "sparsity": 0.3,
        "scope": "global",
    }
    assert list(printed["methods"])[-1] == "one-shot-pruning"  # after the built-in methods
    with pytest.raises(ValueError, match=r"methods.one-shot-pruning.sparsity: expected a number"):
        StudyConfig.from_dict({"methods": {"one-shot-pruning": {"sparsity": 1.0}}})


def test_a_new_method_file_runs_and_reaches_the_table(one_shot: ModuleType, tmp_path: Path) -> None:
    data = tiny_study(tmp_path, methods={"one-shot-pruning": {"sparsity": 0.5}}, seeds=[0])
    results = run_study(StudyConfig.from_dict(data), progress=False)
    (record,) = results["runs"]
    assert (record["method"], record["title"], record["status"]) == (
        "one-shot-pruning",
        "OS-50%",
        "done",
    )
    table = (tmp_path / "study" / "results.md").read_text(encoding="utf-8")
    assert "| OS-50% |" in table
    # Half of the encoder's Linear weights are zero in the saved student, counted here directly.
    student = AutoModelForSequenceClassification.from_pretrained(
        tmp_path / "study" / record["model_dir"]
    )
    weights = [
        module.weight
        for name, module in student.named_modules()
        if isinstance(module, torch.nn.Linear) and ".layer." in name
    ]
    total = sum(w.numel() for w in weights)
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert abs(zeros - total / 2) <= 1
    saved = json.loads((tmp_path / "study" / "results.json").read_text(encoding="utf-8"))
    assert saved["config"]["methods"] == {
        "one-shot-pruning": {"enabled": True, "sparsity": 0.5, "scope": "global"}
    }


def test_a_second_import_of_a_method_file_keeps_the_registered_class(tmp_path: Path) -> None:
    # pytest's doctest collection imports study/methods/*.py by path, under another module name.
    from loyalkit.study.methods import kd_logit

    saved = dict(REGISTRY)
    try:
        spec = importlib.util.spec_from_file_location("kd_logit_again", kd_logit.__file__)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        assert REGISTRY["kd-logit"] is kd_logit.LogitKDSettings
        assert module.LogitKDSettings is kd_logit.LogitKDSettings
    finally:
        sys.modules.pop("kd_logit_again", None)
        REGISTRY.clear()
        REGISTRY.update(saved)


def test_a_method_name_taken_by_another_file_is_refused() -> None:
    @dataclass(frozen=True)
    class Impostor(MethodSettings):
        name: ClassVar[str] = "kd-logit"

        def build(self, *args: Any) -> None: ...

        def title(self, variant: Any) -> str:
            return "impostor"

    with pytest.raises(ValueError, match="method name 'kd-logit' is already registered by"):
        register(Impostor)
