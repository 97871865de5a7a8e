"""What a study method is (a settings dataclass that builds its student) and the registry of them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from loyalkit.study.schema import flag, integer, number

if TYPE_CHECKING:
    from loyalkit.study.methods._training import MethodContext


@dataclass(frozen=True)
class MethodSettings:
    """A study method: its settings are the dataclass fields (declared with
    ``loyalkit.study.schema``, so each is checked where it is declared; their defaults are the
    ``quick`` preset), and class attributes give its ``name`` in config files, its place in the
    study's ``order`` and the ``paper`` preset's changes. :meth:`build` makes and saves the
    student, :meth:`title` names it in the results table. Subclass it in a file of
    ``loyalkit.study.methods`` and decorate the class with :func:`register`."""

    name: ClassVar[str]
    order: ClassVar[float] = 1000.0
    paper: ClassVar[Mapping[str, Any]] = {}

    enabled: bool = flag(True)

    def build(self, context: MethodContext, run: RunSpec, seed: int, model_dir: Path) -> None:
        """Make the student from ``context.teacher`` and save it to ``model_dir``."""
        raise NotImplementedError(f"{type(self).__name__}.build")

    def title(self, variant: float | None) -> str:
        """The method's name in the results table (``variant``: see :meth:`variants`)."""
        raise NotImplementedError(f"{type(self).__name__}.title")

    def variants(self) -> dict[str, float | None]:
        """Run-id suffix -> value, one run each (magnitude pruning: one per sparsity)."""
        return {"": None}

    def restricted(self, suffixes: Iterable[str]) -> MethodSettings | None:
        """These settings running only the variants with ``suffixes`` (None: none of them)."""
        return self if "" in suffixes else None


@dataclass(frozen=True)
class TrainedSettings(MethodSettings):
    """A method that fine-tunes: its Trainer settings."""

    epochs: float = number(2.0, 0, open_low=True)
    learning_rate: float = number(5e-5, 0, open_low=True)
    batch_size: int = integer(16, 1)


@dataclass(frozen=True)
class StudentSettings(TrainedSettings):
    """A method that trains a student of ``student_layers`` layers."""

    student_layers: int = integer(3, 1)
    epochs: float = 4.0
    learning_rate: float = 1e-4


@dataclass(frozen=True)
class RunSpec:
    """One compressed model to build: a method (a magnitude-pruning run per sparsity)."""

    method: str
    family: str
    title: str
    settings: MethodSettings
    sparsity: float | None = None


#: Method name -> its settings class, in the study's order; filled by :func:`register`.
REGISTRY: dict[str, type[MethodSettings]] = {}

Settings = TypeVar("Settings", bound=type[MethodSettings])


def _defined_in(cls: type) -> tuple[str, str]:
    """The source file and qualified name of ``cls`` (its identity across imports of one file)."""
    import inspect

    try:
        source = str(Path(inspect.getfile(cls)).resolve())
    except TypeError:
        source = cls.__module__
    return source, cls.__qualname__


def register(cls: Settings) -> Settings:
    """Add the method ``cls`` (which declares its own ``name``) to :data:`REGISTRY`."""
    name = vars(cls).get("name")
    if not isinstance(name, str) or not name:
        raise TypeError(f"{cls.__name__}: a method needs a class attribute `name` (a string)")
    for hook in ("build", "title"):
        if getattr(cls, hook) is getattr(MethodSettings, hook):
            raise TypeError(f"{cls.__name__} ({name!r}) must define `{hook}`")
    existing = REGISTRY.get(name)
    if existing is not None and existing is not cls:
        if _defined_in(existing) == _defined_in(cls):
            # The same file imported a second time under another module name (pytest's doctest
            # collection imports study/methods/*.py by path): keep the class already in use, or
            # settings built earlier would no longer be instances of the registered class.
            return existing  # type: ignore[return-value]
        raise ValueError(
            f"{cls.__name__}: method name {name!r} is already registered by "
            f"{existing.__module__}.{existing.__qualname__}"
        )
    methods: list[type[MethodSettings]] = [m for m in REGISTRY.values() if m.name != name]
    methods = sorted([*methods, cls], key=lambda m: m.order)
    REGISTRY.clear()
    REGISTRY.update((m.name, m) for m in methods)
    return cls
