"""Reading a study config file (YAML or JSON) into the mapping ``StudyConfig.from_dict`` takes.

Relative paths in the file are made absolute against the file's folder, so the working folder and
the spelling of the file's path do not change the study.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from loyalkit.robustness.textattack_setup import SENTENCE_ENCODERS

__all__ = ["ATTACK_PATHS", "read_config_file"]

#: The attack's resource settings that are paths.
ATTACK_PATHS = ("synonyms", "nltk_data", "sentence_encoder")


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
    # A named sentence encoder ("use", "minilm") is not a path.
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
    sections = {"task": ("train_file", "validation_file", "cache_dir"), "attack": ATTACK_PATHS}
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


def read_config_file(path: str | Path) -> Any:
    """The parsed content of ``path`` (``.yaml``/``.yml``/``.json``), relative paths resolved."""
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
    return data
