"""``loyalkit study push RESULTS_DIR --method M --seed S --repo-id U/N [--dry-run]``.

Reads the study's ``RESULTS_DIR/results.json``, writes the model card of one compressed model
(its loyalty, robustness and speed-up in the card's model-index) and uploads the model with it.
``loyalkit.cli.study`` registers this action with :func:`add_push_parser` and runs it with
:func:`run_push`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from loyalkit.hub_api import add_hub_push_options

__all__ = ["add_push_parser", "run_push"]


def add_push_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``push`` on the ``study`` command's sub-parsers."""
    parser = subparsers.add_parser(
        "push",
        help="upload one compressed model of a study to the Hub with a model card",
        description="Build the model card of one model of a finished study (model-index metadata "
        "with accuracy, label and probability loyalty, flips, after-attack accuracy, attack "
        "success rate, queries and CPU speed-up; the numbers beside the teacher's; how to load "
        "it; the citation), validate it offline, then create the model repository and upload "
        "the model folder with the card as README.md.",
    )
    parser.add_argument(
        "results_dir", metavar="RESULTS_DIR", help="the study's output folder (holds results.json)"
    )
    parser.add_argument(
        "--method", required=True, metavar="M", help="the method whose model to push"
    )
    parser.add_argument(
        "--seed",
        type=int,
        metavar="S",
        help="the seed of the run to push (default: the method's only successful seed)",
    )
    parser.add_argument(
        "--repo-id", required=True, metavar="U/N", help="Hub repository id, owner/name"
    )
    add_hub_push_options(
        parser,
        dry_run_help="validate the card offline, write it to RESULTS_DIR/cards/, list the files; "
        "no network",
        private_help="create the repository private",
    )
    parser.add_argument(
        "--base-model",
        metavar="ID",
        help="the card's base_model (default: the teacher, when the study named it by a Hub id)",
    )
    parser.add_argument("--license", metavar="L", help="the card's license, e.g. apache-2.0")
    return parser


def _check_unchanged(model_dir: Path) -> None:
    """Refuse to push a model whose files differ from those the study measured (done.json)."""
    from loyalkit.study.state import changed_files, read_json

    done = read_json(model_dir.parent / "done.json")
    if not isinstance(done, dict) or not done.get("files"):
        return  # a study folder from before file hashes were recorded: nothing to compare
    changed = changed_files(model_dir, done["files"])
    if changed:
        raise ValueError(
            f"the model in {str(model_dir)!r} is not the one the study measured: "
            f"{', '.join(changed[:5])} changed since. Rerun `loyalkit study run` to redo it"
        )


def run_push(args: argparse.Namespace, api: Any = None) -> int:
    """Build, check and push (or, with ``--dry-run``, only show) the card and the model."""
    from loyalkit.study.hub_push import check_repo_id, push_model
    from loyalkit.study.model_card import build_model_card, card_eval_results, find_run
    from loyalkit.study.records import read_results

    results_dir = Path(args.results_dir)
    results_file = results_dir / "results.json"
    if not results_file.is_file():
        raise FileNotFoundError(f"RESULTS_DIR {str(results_dir)!r} holds no results.json")
    check_repo_id(args.repo_id)
    results = read_results(results_file)
    run = find_run(results, args.method, args.seed)
    if not run.model_dir:
        raise ValueError(f"method {args.method!r} seed {run.seed} saved no model to push")
    model_dir = results_dir / run.model_dir
    _check_unchanged(model_dir)
    card = build_model_card(
        results,
        args.method,
        run.seed,
        repo_id=args.repo_id,
        base_model=args.base_model,
        license=args.license,
        model_dir=model_dir,
    )
    expected = card_eval_results(run, results.task or {}, results.config or {})
    plan = push_model(
        model_dir,
        args.repo_id,
        card,
        dry_run=args.dry_run,
        api=api,
        private=args.private,
        token=args.token,
        expected_results=expected,
    )
    visibility = "private" if args.private else "public"
    if args.dry_run:
        saved = results_dir / "cards" / f"{args.method}-seed-{run.seed}.md"
        saved.parent.mkdir(exist_ok=True)
        saved.write_text(plan.card, encoding="utf-8")
        print(f"Dry run, nothing uploaded. The card is valid; written to {saved}.")
        print(f"Would create the {visibility} model repository {plan.repo_id}  {plan.url}")
    else:
        print(f"Pushed {plan.repo_id}  {plan.url} ({visibility})")
    width = max(len(path) for path, _ in plan.files)
    for path, size in plan.files:
        print(f"  {path:<{width}}  {size:>12,} bytes")
    print("Model-index results:")
    for result in expected:
        print(f"  {result.metric_type:<22} {result.metric_value:.4g}")
    return 0
