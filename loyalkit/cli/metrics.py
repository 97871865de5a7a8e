"""``loyalkit metrics install`` and ``push``: the ``evaluate`` modules offline and on the Hub."""

from __future__ import annotations

import argparse
from typing import Any

from loyalkit.hub_api import add_hub_push_options
from loyalkit.metrics.modules import METRIC_NAMES

_OFFLINE_HINT = (
    "With no network, set HF_EVALUATE_OFFLINE=1: evaluate then loads these copies at once instead\n"
    "of trying the Hub first (without it, it tries the Hub and falls back to this cache):\n"
    "  export HF_EVALUATE_OFFLINE=1"
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``metrics`` with its ``install`` and ``push`` actions."""
    parser = subparsers.add_parser(
        "metrics",
        help="install the evaluate metric modules for offline use, or publish them as Hub Spaces",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"loyalkit ships three evaluate modules: {', '.join(METRIC_NAMES)}.\n"
        "`install` makes evaluate.load(NAME) work with no network; `push` publishes them as\n"
        "Hugging Face Hub metric Spaces. `loyalkit metrics ACTION --help` explains each option.",
    )
    actions = parser.add_subparsers(dest="metrics_command", metavar="ACTION", required=True)
    usages = [_add_install(actions).format_usage(), _add_push(actions).format_usage()]
    parser.epilog = "".join(usages)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``loyalkit metrics install`` or ``loyalkit metrics push``."""
    if args.metrics_command == "install":
        return _install(args)
    return _push(args)


def _add_names(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name",
        dest="names",
        action="extend",
        nargs="+",
        choices=METRIC_NAMES,
        metavar="NAME",
        help=f"metric(s) to handle, repeatable; one of {', '.join(METRIC_NAMES)} (default: all)",
    )
    parser.add_argument(
        "--spaces",
        metavar="DIR",
        help="folder holding one NAME/ sub-folder per metric (default: the modules shipped "
        "with this loyalkit)",
    )


def _add_install(actions: Any) -> argparse.ArgumentParser:
    parser = actions.add_parser(
        "install",
        help="copy the modules into evaluate's module cache so evaluate.load(NAME) works offline",
        description="Copy the metric modules into evaluate's module cache, where evaluate.load "
        "finds them when the Hub is unreachable: "
        "$HF_MODULES_CACHE/evaluate_modules/metrics/NAMESPACE--NAME/<hash>/NAME.py. The cache "
        "follows evaluate's own settings (HF_MODULES_CACHE, else $HF_HOME/modules). The cached "
        "modules import the installed loyalkit; install again after the modules change.",
    )
    parser.add_argument(
        "--namespace",
        default="evaluate-metric",
        metavar="NS",
        help="cache the modules as NS/NAME so evaluate.load('NS/NAME') works offline; the default "
        "'evaluate-metric' serves bare evaluate.load('NAME'). Run once per namespace you need",
    )
    parser.add_argument(
        "--modules-cache",
        metavar="DIR",
        help="install into DIR instead of evaluate's module cache; then set HF_MODULES_CACHE=DIR "
        "wherever evaluate.load runs",
    )
    _add_names(parser)
    return parser


def _add_push(actions: Any) -> argparse.ArgumentParser:
    parser = actions.add_parser(
        "push",
        help="publish each metric as a Hugging Face Hub metric Space (gradio)",
        description="Validate each metric Space folder (NAME.py, README.md with front matter "
        "title, sdk: gradio, app_file, tags evaluate and metric; app.py; requirements.txt), then "
        "create the Space NAMESPACE/NAME and upload the folder with a loyalkit wheel and a "
        "requirements.txt that installs it. Nothing is uploaded if any Space is invalid.",
    )
    parser.add_argument(
        "--namespace",
        required=True,
        metavar="USER",
        help="Hub user or organisation that owns the Spaces",
    )
    add_hub_push_options(
        parser,
        dry_run_help="validate and list the repo ids and every file with its size; no network",
        private_help="create the Spaces private",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--project",
        metavar="DIR",
        help="loyalkit source tree to build the wheel from (default: the checkout this loyalkit "
        "is installed from, editable)",
    )
    source.add_argument(
        "--wheel",
        metavar="FILE",
        help="upload this prebuilt loyalkit-*.whl instead of building one",
    )
    _add_names(parser)
    return parser


def _install(args: argparse.Namespace) -> int:
    from loyalkit.metrics.module_cache import install_metric_modules

    installed = install_metric_modules(
        args.names or METRIC_NAMES,
        namespace=args.namespace,
        modules_cache=args.modules_cache,
        spaces_dir=args.spaces,
    )
    width = max(len(module.load_name) for module in installed) + len('evaluate.load("")')
    print(f"Installed {len(installed)} metric module(s) into evaluate's module cache:")
    for module in installed:
        call = f'evaluate.load("{module.load_name}")'
        print(f"  {call:<{width}}  {module.path}")
    if args.modules_cache:
        print("Set HF_MODULES_CACHE wherever evaluate runs:")
        print(f"  export HF_MODULES_CACHE={args.modules_cache}")
    print(_OFFLINE_HINT)
    return 0


def _push(args: argparse.Namespace) -> int:
    from huggingface_hub import constants

    from loyalkit.metrics.spaces import push_metric_spaces

    plans = push_metric_spaces(
        args.namespace,
        args.names or METRIC_NAMES,
        dry_run=args.dry_run,
        private=args.private,
        token=args.token,
        spaces_dir=args.spaces,
        project_dir=args.project,
        wheel=args.wheel,
    )
    visibility = "private" if args.private else "public"
    if args.dry_run:
        print(f"Dry run, nothing uploaded. Would create {len(plans)} {visibility} gradio Space(s):")
    for plan in plans:
        print(f"{plan.repo_id}  {constants.ENDPOINT}/spaces/{plan.repo_id}")
        width = max(len(path) for path, _ in plan.files)
        for path, size in plan.files:
            print(f"  {path:<{width}}  {size:>8,} bytes")
        print(f"  requirements.txt installs {plan.loyalkit_requirement}")
    if args.private:
        print(
            "Note: the Space build downloads the wheel by URL without a token; in a private Space "
            "that fails, so install loyalkit there another way or make the Space public."
        )
    if not args.dry_run:
        print(f"Pushed {len(plans)} Space(s).")
    return 0
