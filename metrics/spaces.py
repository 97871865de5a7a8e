"""Check and publish loyalkit's metric folders as Hugging Face Hub metric Spaces.

A metric Space holds ``NAME.py`` (the ``evaluate`` module), ``README.md`` (YAML front matter: title,
sdk: gradio, app_file, tags with evaluate and metric), ``app.py`` and ``requirements.txt``.
loyalkit is not on PyPI, so each Space also receives a wheel of loyalkit, and its
``requirements.txt`` is rewritten to install that wheel from the Space's own URL: the Space build
runs ``pip install -r requirements.txt`` before the repository files are copied in, so a relative
path would not resolve. The source folders are never modified.

Example (``push_metric_spaces(..., dry_run=True)`` stages everything and touches no network; checking
alone is instant):
    >>> from loyalkit.metrics import module_path
    >>> space_problems(module_path("label_loyalty"), "label_loyalty")
    []
    >>> check_spaces(["loyalty", "label_loyalty", "probability_loyalty"])
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loyalkit.hub_api import HubApi, hf_api
from loyalkit.metrics.module_cache import check_hub_namespace, check_metric_names
from loyalkit.metrics.modules import METRIC_NAMES, SPACE_FILES, module_path

REQUIRED_TAGS: tuple[str, ...] = ("evaluate", "metric")
_WHEEL_PATTERN = "loyalkit-*.whl"


class SpaceError(ValueError):
    """A metric Space folder is incomplete or its README front matter is invalid."""


@dataclass(frozen=True)
class SpacePlan:
    """What is (or, in a dry run, would be) uploaded to one Space."""

    name: str
    repo_id: str
    #: ``(path in the Space, size in bytes)`` for every uploaded file, sorted by path.
    files: tuple[tuple[str, int], ...]
    #: The ``requirements.txt`` line that installs loyalkit in the Space.
    loyalkit_requirement: str


def space_files(name: str) -> tuple[str, ...]:
    """The files a metric Space must hold, e.g. ``('loyalty.py', 'README.md', ...)``."""
    return tuple(pattern.format(name=name) for pattern in SPACE_FILES)


def space_problems(folder: str | os.PathLike[str], name: str) -> list[str]:
    """Everything wrong with one metric Space folder; an empty list means it is valid.

    Example:
        >>> space_problems("/nonexistent", "loyalty")
        ['folder /nonexistent does not exist']
    """
    folder = Path(folder)
    if not folder.is_dir():
        return [f"folder {folder} does not exist"]
    problems = [f"missing {file}" for file in space_files(name) if not (folder / file).is_file()]
    readme = folder / "README.md"
    if readme.is_file():
        problems += _front_matter_problems(readme, folder)
    return problems


def check_spaces(names: Sequence[str], spaces_dir: str | os.PathLike[str] | None = None) -> None:
    """Raise ``SpaceError`` naming each invalid Space and what is wrong with it."""
    report = []
    for name in names:
        problems = space_problems(_space_folder(name, spaces_dir), name)
        if problems:
            report.append(
                f"Space {name!r} ({_space_folder(name, spaces_dir)}): " + "; ".join(problems)
            )
    if report:
        raise SpaceError("invalid metric Space(s), nothing uploaded:\n  " + "\n  ".join(report))


def push_metric_spaces(
    namespace: str,
    names: Sequence[str] = METRIC_NAMES,
    *,
    dry_run: bool = False,
    private: bool = False,
    token: str | None = None,
    api: HubApi | None = None,
    spaces_dir: str | os.PathLike[str] | None = None,
    project_dir: str | os.PathLike[str] | None = None,
    wheel: str | os.PathLike[str] | None = None,
) -> list[SpacePlan]:
    """Validate every Space, then create ``NAMESPACE/NAME`` Spaces and upload each folder.

    Nothing is uploaded unless all Spaces are valid. Each upload holds the Space files, a loyalkit
    wheel (built from ``project_dir``, or the given ``wheel``) and a rewritten ``requirements.txt``.

    Args:
        namespace: the Hub user or organisation that owns the Spaces.
        names: metrics to publish, from ``METRIC_NAMES``.
        dry_run: validate and stage everything, but call no Hub API.
        private: create the Spaces private.
        token: a Hub token; default: the one ``huggingface_hub`` finds (``HF_TOKEN``, login).
        api: an object with ``HfApi``'s ``create_repo`` and ``upload_folder``; default ``HfApi``.
        spaces_dir: a folder with one sub-folder per metric; default: the shipped metric folders.
        project_dir: loyalkit's source tree for the wheel; default: the one this loyalkit runs from.
        wheel: a prebuilt loyalkit wheel, instead of building one.
    """
    names = check_metric_names(names)
    check_hub_namespace(namespace)
    if wheel is not None and project_dir is not None:
        raise ValueError("pass at most one of `wheel` and `project_dir`")
    check_spaces(names, spaces_dir)
    plans = []
    with tempfile.TemporaryDirectory(prefix="loyalkit-spaces-") as tmp:
        built = _checked_wheel(wheel) if wheel else build_wheel(project_dir, Path(tmp, "dist"))
        staged = {}
        for name in names:
            repo_id = f"{namespace}/{name}"
            staged[name] = Path(tmp, name)
            plans.append(
                stage_space(_space_folder(name, spaces_dir), name, repo_id, built, staged[name])
            )
        if not dry_run:
            hub = api if api is not None else hf_api(token)
            for plan in plans:
                hub.create_repo(
                    plan.repo_id,
                    repo_type="space",
                    space_sdk="gradio",
                    private=private,
                    exist_ok=True,
                )
                hub.upload_folder(
                    repo_id=plan.repo_id,
                    folder_path=str(staged[plan.name]),
                    repo_type="space",
                    commit_message=f"Upload the {plan.name} metric with {built.name}",
                    # An older loyalkit wheel left in the Space would only confuse readers.
                    delete_patterns=_WHEEL_PATTERN,
                )
    return plans


def stage_space(folder: Path, name: str, repo_id: str, wheel: Path, dest: Path) -> SpacePlan:
    """Copy one Space into ``dest`` with the wheel and a requirements.txt that installs it."""
    from huggingface_hub import hf_hub_url

    dest.mkdir(parents=True)
    for file in _uploaded_files(folder, name):
        if file != "requirements.txt":
            shutil.copyfile(folder / file, dest / file)
    shutil.copyfile(wheel, dest / wheel.name)
    url = hf_hub_url(repo_id, wheel.name, repo_type="space")
    requirements, requirement = rewrite_requirements(
        (folder / "requirements.txt").read_text(encoding="utf-8"), url
    )
    (dest / "requirements.txt").write_text(requirements, encoding="utf-8")
    files = tuple(sorted((p.name, p.stat().st_size) for p in dest.iterdir()))
    return SpacePlan(name, repo_id, files, requirement)


def rewrite_requirements(text: str, wheel_url: str) -> tuple[str, str]:
    """Replace any loyalkit line of a requirements file by ``loyalkit @ wheel_url`` (extras kept).

    Example:
        >>> print(rewrite_requirements("gradio>=5\\nloyalkit[app]>=0.1\\n", "https://h/l.whl")[0])
        gradio>=5
        loyalkit[app] @ https://h/l.whl
        <BLANKLINE>
    """
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    kept, extras = [], ""
    for line in text.splitlines():
        try:
            requirement = Requirement(line.split(" #", 1)[0].strip())
        except InvalidRequirement:  # comments, blank lines, pip options: keep as written
            kept.append(line)
            continue
        if canonicalize_name(requirement.name) == "loyalkit":
            extras = f"[{','.join(sorted(requirement.extras))}]" if requirement.extras else ""
        else:
            kept.append(line)
    loyalkit_line = f"loyalkit{extras} @ {wheel_url}"
    return "\n".join([*kept, loyalkit_line]) + "\n", loyalkit_line


def build_wheel(project_dir: str | os.PathLike[str] | None, dest: Path) -> Path:
    """Build loyalkit's wheel with pip, offline, from a clean copy of its source tree."""
    project = Path(project_dir) if project_dir is not None else _source_tree()
    if not (project / "pyproject.toml").is_file() and not (project / "setup.py").is_file():
        raise ValueError(f"`project_dir` {project} is not a Python project (no pyproject.toml)")
    with tempfile.TemporaryDirectory(prefix="loyalkit-src-") as tmp:
        # A copy keeps setuptools' build/ and egg-info out of the checkout, and stale files in an
        # old build/ out of the wheel.
        source = Path(tmp, "src")
        shutil.copytree(project, source, ignore=_ignored_by(project))
        command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
        command += ["--no-index", "--quiet", "--wheel-dir", str(dest), str(source)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building loyalkit's wheel failed:\n{done.stderr[-4000:]}")
    return _checked_wheel(next(dest.glob(_WHEEL_PATTERN)))


def _checked_wheel(wheel: str | os.PathLike[str]) -> Path:
    from packaging.utils import InvalidWheelFilename, parse_wheel_filename

    path = Path(wheel)
    try:
        project = parse_wheel_filename(path.name)[0]
    except InvalidWheelFilename:
        project = None
    if project != "loyalkit" or not path.is_file():
        raise ValueError(f"`wheel` must be an existing loyalkit-*.whl file, got {str(path)!r}")
    return path


def _source_tree() -> Path:
    import loyalkit

    root = Path(loyalkit.__file__).resolve().parent.parent
    if not (root / "pyproject.toml").is_file() or not (root / "metrics").is_dir():
        raise ValueError(
            f"loyalkit runs from {root}, not from a source checkout: pass `project_dir` "
            "(--project) or a prebuilt `wheel` (--wheel)"
        )
    return root


def _ignored_by(project: Path) -> Callable[[str, list[str]], set[str]]:
    """A ``shutil.copytree`` ignore function: hidden and build folders, and .gitignore's names."""
    patterns = {".*", "__pycache__", "*.egg-info", "build", "dist", "*.whl"}
    gitignore = project / ".gitignore"
    if gitignore.is_file():
        for line in gitignore.read_text(encoding="utf-8").splitlines():
            line = line.strip().strip("/")
            if line and not line.startswith(("#", "!")) and "/" not in line:
                patterns.add(line)

    def ignore(_directory: str, names: list[str]) -> set[str]:
        return {n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)}

    return ignore


def _uploaded_files(folder: Path, name: str) -> list[str]:
    from huggingface_hub import metadata_load

    files = list(space_files(name))
    app_file = (metadata_load(folder / "README.md") or {}).get("app_file")
    if isinstance(app_file, str) and app_file not in files:
        files.append(app_file)
    return files


def _front_matter_problems(readme: Path, folder: Path) -> list[str]:
    import yaml
    from huggingface_hub import metadata_load

    try:
        meta = metadata_load(readme)
    except (yaml.YAMLError, ValueError) as err:
        detail = " ".join(str(err).split())
        return [f"README.md front matter is not valid YAML ({detail})"]
    if not meta:
        return ["README.md has no YAML front matter (a block between '---' lines at its top)"]
    problems = []
    if not isinstance(meta.get("title"), str) or not meta["title"].strip():
        problems.append("README.md front matter needs a non-empty `title`")
    if meta.get("sdk") != "gradio":
        problems.append(f"README.md front matter needs `sdk: gradio`, got {meta.get('sdk')!r}")
    app_file = meta.get("app_file")
    if not isinstance(app_file, str) or not app_file:
        problems.append("README.md front matter needs `app_file`")
    elif Path(app_file).name != app_file or not (folder / app_file).is_file():
        problems.append(f"README.md `app_file: {app_file}` is not a file in the Space folder")
    tags = meta.get("tags")
    tags = tags if isinstance(tags, list) else []
    missing = [tag for tag in REQUIRED_TAGS if tag not in tags]
    if missing:
        problems.append(f"README.md `tags` must include {', '.join(missing)}")
    return problems


def _space_folder(name: str, spaces_dir: str | os.PathLike[str] | None) -> Path:
    return module_path(name) if spaces_dir is None else Path(spaces_dir) / name
