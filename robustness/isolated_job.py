"""An :class:`~loyalkit.robustness.attack_runner.AttackConfig` as a JSON message and back.

The attack worker receives its settings as plain data (:mod:`loyalkit.robustness.protocol`);
paths travel as strings.

Example:
    >>> from loyalkit.robustness.attack_runner import AttackConfig
    >>> config = AttackConfig(recipe="deepwordbug", num_examples=5)
    >>> config_from_message(config_to_message(config)) == config
    True
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from loyalkit.robustness.attack_runner import AttackConfig
from loyalkit.robustness.textattack_setup import SENTENCE_ENCODERS, OfflineResources

__all__ = ["config_from_message", "config_to_message"]


def config_to_message(config: AttackConfig) -> dict[str, Any]:
    """``config`` as JSON-ready data."""
    settings = {
        f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name != "resources"
    }
    resources = config.resources
    settings["resources"] = (
        None
        if resources is None
        else {
            f.name: None if getattr(resources, f.name) is None else str(getattr(resources, f.name))
            for f in dataclasses.fields(resources)
        }
    )
    return settings


def config_from_message(message: dict[str, Any]) -> AttackConfig:
    """The :class:`AttackConfig` of :func:`config_to_message`'s data (validated again)."""
    settings = dict(message)
    resources = settings.pop("resources", None)
    if resources is not None:
        resources = OfflineResources(**{k: _resource_value(k, v) for k, v in resources.items()})
    return AttackConfig(**settings, resources=resources)


def _resource_value(name: str, value: str | None) -> str | Path | None:
    # A sentence encoder may be named ("use", "minilm") rather than a folder.
    if value is None or (name == "sentence_encoder" and value in SENTENCE_ENCODERS):
        return value
    return Path(value)
