"""What every study method declares, and the registry the method files fill by :func:`register`."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loyalkit.study.schema import check_fields, flag, integer, number

__all__ = [
    "REGISTRY",
    "Method",
    "MethodSettings",
    "RunSpec",
    "StudentSettings",
    "TrainedSettings",
    "register",
]


@dataclass(frozen=True)
class MethodSettings:
    """What every method has: a switch. Subclasses declare their fields with ``loyalkit.study.schema``."""

    enabled: bool = flag(True)

    def check(self, path: str) -> None:
        check_fields(self, path)

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


Build = Callable[[Any, RunSpec, int, Path], None]


@dataclass(frozen=True)
class Method:
    """A study method: its ``name`` in config files, its ``settings`` class (the ``quick`` preset's
    values are its defaults; ``paper`` the ``paper`` preset's), the function that builds and saves
    the student ``build(context, run, seed, model_dir)``, the results table's ``title(settings,
    variant)`` and its place in the study's ``order``."""

    name: str
    settings: type[MethodSettings]
    build: Build
    title: Callable[[Any, float | None], str]
    order: float
    paper: MethodSettings | None = None


#: Method name -> :class:`Method`, in the study's order; filled by :func:`register`.
REGISTRY: dict[str, Method] = {}


def register(
    name: str,
    settings: type[MethodSettings],
    title: Callable[[Any, float | None], str],
    *,
    order: float = 1000.0,
    paper: MethodSettings | None = None,
) -> Callable[[Build], Build]:
    """Register the decorated build function as the method ``name`` (see :class:`Method`)."""

    def decorate(build: Build) -> Build:
        if not isinstance(paper, (settings, type(None))):
            raise TypeError(f"{name}: `paper` must be a {settings.__name__}")
        method = Method(name, settings, build, title, order, paper)
        methods = sorted(
            [*(m for m in REGISTRY.values() if m.name != name), method], key=lambda m: m.order
        )
        REGISTRY.clear()
        REGISTRY.update((m.name, m) for m in methods)
        return build

    return decorate
