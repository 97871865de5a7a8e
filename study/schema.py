"""Settings fields that carry their own check: one declaration per value, one message per kind.

A settings dataclass declares each field with :func:`number`, :func:`integer`, :func:`flag`,
:func:`choice`, :func:`random_seed` or :func:`setting`; a value that ``loyalkit.compression`` (or a
callback's config) already bounds is declared with :func:`checked_by`, which builds that config, so
the bound is declared once, where the math lives. :func:`check_fields` runs every field's check and
names the key (``methods.theseus.replacing_share: expected a number in [0, 1], got 1.5``). A
subclass that only changes a default (``epochs: float = 1.0``) keeps the check of the class it
overrides.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Mix:
    ...     alpha: float = number(0.5, 0, 1)
    >>> check_fields(Mix(alpha=1.5), "methods.kd")
    Traceback (most recent call last):
    ...
    ValueError: methods.kd.alpha: expected a number in [0, 1], got 1.5
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import field, fields
from functools import partial
from typing import Any

__all__ = [
    "MAX_SEED",
    "check_fields",
    "check_bool",
    "check_int",
    "check_number",
    "check_seed",
    "checked_by",
    "choice",
    "fail",
    "flag",
    "integer",
    "number",
    "random_seed",
    "setting",
]

#: Seeds reach NumPy (``np.random.seed`` in ``transformers.set_seed``), which takes 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1

Check = Callable[[str, Any], None]


def fail(path: str, message: str) -> ValueError:
    return ValueError(f"{path}: {message}")


def check_bool(path: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise fail(path, f"expected true or false, got {value!r}")


def check_int(path: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise fail(path, f"expected an int >= {minimum}, got {value!r}")


def check_seed(path: str, value: Any) -> None:
    check_int(path, value, 0)
    if value > MAX_SEED:
        raise fail(path, f"expected a seed in 0..2**32 - 1 (NumPy's range), got {value}")


def check_number(
    path: str, value: Any, low: float, high: float | None = None, *, open_low: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if open_low else value >= low) and (high is None or value <= high)
    if not ok:
        bound = f"> {low}" if open_low else f">= {low}"
        allowed = bound if high is None else f"in {'(' if open_low else '['}{low}, {high}]"
        raise fail(path, f"expected a number {allowed}, got {value!r}")


def _check_choice(path: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise fail(path, f"expected one of {', '.join(choices)}, got {value!r}")


def setting(default: Any, check: Check, *, optional: bool = False) -> Any:
    """A field whose value ``check(path, value)`` validates (None passes when ``optional``)."""
    return field(default=default, metadata={"check": check, "optional": optional})


def flag(default: bool = True) -> Any:
    return setting(default, check_bool)


def integer(default: int | None, minimum: int, *, optional: bool = False) -> Any:
    return setting(default, partial(check_int, minimum=minimum), optional=optional)


def number(
    default: float | None,
    low: float,
    high: float | None = None,
    *,
    open_low: bool = False,
    optional: bool = False,
) -> Any:
    check = partial(check_number, low=low, high=high, open_low=open_low)
    return setting(default, check, optional=optional)


def _check_by(
    path: str, value: Any, kind: str, owner: str, build: Callable[[Any], object], default: Any
) -> None:
    # Building the config imports torch and transformers (4-5 s): `loyalkit study config` should
    # not pay that for values nobody changed. The defaults pass compression's checks: a test
    # builds every method's defaults (test_study_config.py).
    if type(value) is type(default) and value == default:
        return
    try:
        build(value)
    except (TypeError, ValueError) as error:
        raise fail(path, f"expected {kind}; {owner}: {error}") from None


def checked_by(
    default: Any, kind: str, owner: str, build: Callable[[Any], object], *, optional: bool = False
) -> Any:
    """A field validated where its math lives: ``build(value)`` makes ``owner`` (the compression
    config that declares the bound) and its error is re-raised naming the key, for instance
    ``methods.kd-logit.alpha: expected a number; DistillationConfig: `alpha` must be in [0, 1.0],
    got 1.5``. ``build`` imports ``owner`` when it runs, not when the method's file is imported
    (the CLI's parser imports the registry, and must not import torch)."""
    check = partial(_check_by, kind=kind, owner=owner, build=build, default=default)
    return setting(default, check, optional=optional)


def choice(default: str, *choices: str) -> Any:
    return setting(default, partial(_check_choice, choices=choices))


def random_seed(default: int = 0) -> Any:
    return setting(default, check_seed)


def _declared(cls: type, name: str) -> Any:
    """The metadata of the nearest class in ``cls``'s MRO that declares a check for ``name``."""
    for klass in cls.__mro__:
        item = getattr(klass, "__dataclass_fields__", {}).get(name)
        if item is not None and "check" in item.metadata:
            return item.metadata
    return None


def check_fields(settings: Any, path: str) -> None:
    """Run the check of every field of the dataclass ``settings``, naming ``path.field``."""
    for item in fields(settings):
        declared = _declared(type(settings), item.name)
        value = getattr(settings, item.name)
        if declared is not None and not (value is None and declared["optional"]):
            declared["check"](f"{path}.{item.name}", value)
