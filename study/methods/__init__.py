"""The study's compression methods, one file each; the registry is what those files register.

A method is a frozen settings dataclass over :class:`MethodSettings` (its fields, declared with
``loyalkit.study.schema``, are checked where they are declared) with a ``name``, an ``order`` in
the study and the ``paper`` preset's changes as class attributes, a ``build(context, run, seed,
model_dir)`` that makes the student from the teacher with ``loyalkit.compression`` and
``loyalkit.callbacks`` in a plain ``transformers.Trainer`` and saves it (helpers below), and a
``title`` for the results table; ``@register`` adds it to :data:`REGISTRY`. Importing this package
imports every module in it whose name does not start with ``_``: adding a method is adding one
file here (the README's "Adding a study method" shows one).

Example:
    >>> list(REGISTRY)[:4]
    ['int8-ptq', 'int8-qat', 'magnitude-pruning', 'head-pruning']
    >>> REGISTRY["kd-logit"]().title(None), REGISTRY["kd-logit"](student_layers=2).title(None)
    ('KD-L3', 'KD-L2')
"""

from __future__ import annotations

import importlib
import pkgutil

from loyalkit.study.methods._registry import (
    REGISTRY,
    MethodSettings,
    RunSpec,
    StudentSettings,
    TrainedSettings,
    register,
)
from loyalkit.study.methods._training import (
    MethodContext,
    check_student_layers,
    save,
    save_int8,
    steps,
    teacher_copy,
    teacher_layers,
    train,
    train_steps,
    training_arguments,
    training_log_callback,
)

__all__ = [
    "REGISTRY",
    "MethodContext",
    "MethodSettings",
    "RunSpec",
    "StudentSettings",
    "TrainedSettings",
    "check_student_layers",
    "register",
    "save",
    "save_int8",
    "steps",
    "teacher_copy",
    "teacher_layers",
    "train",
    "train_steps",
    "training_arguments",
    "training_log_callback",
]

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")
