"""The system files the test suite and the offline attack recipes read, and the Debian packages
that ship them: one list for the Makefile's install step and for the test that checks it.

Standard library only, so ``make`` can run it before any virtual environment exists:

    python3 tests/system_deps.py --missing-packages   # Debian packages to install (one line)
    python3 tests/system_deps.py --check              # exit 1 naming each missing file's package
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
WORDNET_DIR = Path("/usr/share/wordnet")


def _wordnet_module() -> Any:
    # Loaded by path: the table imports nothing, and this script runs before loyalkit is installed.
    spec = importlib.util.spec_from_file_location(
        "wordnet_files", _ROOT / "robustness" / "wordnet_files.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wordnet_files() -> dict[str, str]:
    return dict(_wordnet_module().WORDNET_FILES)


def system_files() -> dict[Path, str]:
    """Every system file the suite reads -> the Debian package that installs it."""
    files = {
        # Browser tests of the metric Spaces (tests/browser.py) drive Debian's Chromium headless.
        Path("/usr/bin/chromium"): "chromium",
        Path("/usr/bin/chromedriver"): "chromium-driver",
    }
    # PWWS-offline and TextFooler-offline read WordNet 3.0 through NLTK, which opens every file.
    files.update({WORDNET_DIR / name: package for name, package in _wordnet_files().items()})
    # `prepare-data` reads WordNet's lexnames table from wordnet-base's man page.
    files[Path(_wordnet_module().DEBIAN_LEXNAMES_MAN_PAGE)] = "wordnet-base"
    return files


def missing_files() -> dict[Path, str]:
    """The files of :func:`system_files` that are absent, with their packages."""
    return {path: package for path, package in system_files().items() if not path.is_file()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument(
        "--missing-packages", action="store_true", help="print the packages to install"
    )
    action.add_argument(
        "--check", action="store_true", help="fail naming each missing file's package"
    )
    args = parser.parse_args(argv)
    missing = missing_files()
    packages = sorted(set(missing.values()))
    if args.missing_packages:
        print(" ".join(packages))
        return 0
    for path, package in sorted(missing.items()):
        print(f"missing {path}: install Debian's {package}", file=sys.stderr)
    if packages:
        print(f"apt-get install {' '.join(packages)}", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
