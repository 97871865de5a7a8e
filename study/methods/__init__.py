"""The study's compression methods, one file each; the registry is what those files register.

A method file declares its settings (a frozen dataclass over :class:`MethodSettings`, fields from
``loyalkit.study.schema`` so each value is checked where it is declared) and registers its build
function with :func:`register` (name, settings, table title, place in the study's order, the
``paper`` preset's settings). Importing this package imports every module in it whose name does
not start with ``_``, so adding a method is adding one file here (see the README's "Adding a
study method"). A build function ``(context, run, seed, model_dir) -> None`` trains or compresses
a copy of the teacher with ``loyalkit.compression`` and ``loyalkit.callbacks`` in a plain
``transformers.Trainer`` and saves the student (see ``_training``).

Example:
    >>> list(REGISTRY)[:4]
    ['int8-ptq', 'int8-qat', 'magnitude-pruning', 'head-pruning']
    >>> REGISTRY["kd-logit"].title(REGISTRY["kd-logit"].settings(), None)
    'KD-L3'
"""

from __future__ import annotations

import importlib
import pkgutil

from loyalkit.study.methods._registry import (
    REGISTRY,
    Method,
    MethodSettings,
    RunSpec,
    StudentSettings,
    TrainedSettings,
    register,
)
from loyalkit.study.methods._training import (
    MethodContext,
    save,
    teacher_copy,
    train,
    train_steps,
    training_arguments,
    training_log_callback,
)

__all__ = [
    "REGISTRY",
    "Method",
    "MethodContext",
    "MethodSettings",
    "RunSpec",
    "StudentSettings",
    "TrainedSettings",
    "register",
    "save",
    "teacher_copy",
    "train",
    "train_steps",
    "training_arguments",
    "training_log_callback",
]

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
