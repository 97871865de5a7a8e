"""TextAttack run in one process, inside the isolated environment: the reference of the parity test.

Run by ``tests/test_isolated_parity.py`` with the isolated interpreter::

    python -I tests/isolated_reference.py --loyalkit-dir DIR --model FOLDER --job JOB.json

It loads the saved classifier with that environment's transformers, wraps it with loyalkit's
dynamic-padding wrapper and runs ``attack_runner.build_model_attack`` + ``run_attack`` in this
one process (the path the worker replaces), then prints the report as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loyalkit-dir", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--job", type=Path, required=True)
    args = parser.parse_args()
    robustness = args.loyalkit_dir.parent / "robustness"
    if not (robustness / "attack_worker.py").is_file():
        robustness = args.loyalkit_dir / "robustness"
    sys.path.insert(0, str(robustness))
    import attack_worker  # the worker's own package registration, nothing else

    sys.path.pop(0)
    attack_worker._register_packages(args.loyalkit_dir)

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from loyalkit.robustness.attack_runner import build_model_attack, run_attack
    from loyalkit.robustness.isolated_job import config_from_message

    torch.set_num_threads(1)
    job = json.loads(args.job.read_text(encoding="utf-8"))
    config = config_from_message(job["config"])
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    rows = [(int(i), tuple(texts), int(label)) for i, texts, label in job["rows"]]
    attack = build_model_attack(model, tokenizer, config)
    report = run_attack(attack, rows, config, tuple(job["text_columns"]))
    print(json.dumps({"summary": report.summary, "examples": report.examples}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
