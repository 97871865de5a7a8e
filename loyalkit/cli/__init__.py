"""The ``loyalkit`` command line.

Each subcommand lives in its own module, listed in ``SUBCOMMAND_MODULES``, with two functions:
``add_parser(subparsers) -> argparse.ArgumentParser`` (registers the subcommand and its options)
and ``run(args) -> int`` (does the work, returns the exit status). Adding a subcommand is adding
its module name to that tuple. Modules are imported only when the command line is parsed, so
``import loyalkit.cli`` stays cheap.

Example:
    >>> build_parser().parse_args(["metrics", "install", "--namespace", "someone"]).namespace
    'someone'
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

import loyalkit

#: Modules that each provide one ``loyalkit`` subcommand.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "loyalkit.cli.metrics",
    "loyalkit.cli.study",
    "loyalkit.cli.attack",
    "loyalkit.cli.compare",
)

#: Errors that mean "the request cannot be done as asked": reported in one line, exit status 1.
_USER_ERRORS = (ValueError, OSError, ImportError, RuntimeError)


def build_parser(modules: Sequence[str] = SUBCOMMAND_MODULES) -> argparse.ArgumentParser:
    """The top-level parser, with one sub-parser per module in ``modules``."""
    parser = argparse.ArgumentParser(
        prog="loyalkit",
        description="Measure how loyal and robust a compressed transformer classifier is to its "
        "teacher. Run `loyalkit COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"loyalkit {loyalkit.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in modules:
        module = importlib.import_module(name)
        module.add_parser(subparsers).set_defaults(command_module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``loyalkit`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    module: ModuleType = args.command_module
    from loyalkit.cli.noise import filtered_noise

    try:
        # The entry point, not the library, filters third-party noise (loyalkit.cli.noise).
        with filtered_noise(quiet=bool(getattr(args, "quiet", False))):
            return int(module.run(args))
    except _USER_ERRORS as err:
        print(f"loyalkit {args.command}: error: {err}", file=sys.stderr)
        return 1
