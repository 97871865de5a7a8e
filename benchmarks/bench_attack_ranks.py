"""AttackCallback under 1 and 2 processes (torchrun, gloo, CPU): the attack's wall time per evaluation.

Run in the main environment (``make venv``, ``loyalkit attack setup``)::

    .venv/bin/python benchmarks/bench_attack_ranks.py --examples 40

The victim is the MiniLM-L6 teacher of ``bench_attack.py`` (cached in ``--cache``). The Trainer's
evaluation set is ``--examples`` SST-2 dev sentences and the callback attacks all of them with
``--recipe``; each process attacks its share with its own worker. A first ``evaluate()`` starts
the workers and builds the recipe (untimed); the second is timed on every rank and the slowest
rank's time is printed, with the summary (which must be the same for 1 and 2 processes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def child(args: argparse.Namespace) -> None:
    import torch.distributed as dist
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer
    from transformers import TrainingArguments as Args

    from loyalkit.callbacks import AttackCallback
    from loyalkit.robustness.attack_runner import sample_rows

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_attack import offline_resources, teacher
    from sst2 import sst2_rows

    torch.set_num_threads(1)
    folder = teacher(args.cache, args.train_size)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    dev = sst2_rows("dev", strip=True)
    rows = [dev[i] for i, _texts, _label in sample_rows(dev, args.examples, 0)]
    data = Dataset.from_list(rows).map(
        lambda b: tokenizer(b["sentence"], truncation=True, max_length=64), batched=True
    )
    resources = offline_resources(args.cache)
    training = Args(
        output_dir=tempfile.mkdtemp(),
        per_device_eval_batch_size=32,
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        ddp_backend="gloo" if "WORLD_SIZE" in os.environ else None,
        ddp_timeout=1800,
    )
    trainer = Trainer(model=model, args=training, eval_dataset=data, processing_class=tokenizer)
    callback = AttackCallback(
        args.recipe, num_examples=args.examples, seed=0, resources=resources
    ).attach(trainer)
    trainer.evaluate()  # starts the workers, builds the recipe
    start = time.perf_counter()
    metrics = trainer.evaluate()
    seconds = time.perf_counter() - start
    rank = dist.get_rank() if dist.is_initialized() else 0
    world = dist.get_world_size() if dist.is_initialized() else 1
    times: list[float] = [seconds]
    if dist.is_initialized():
        gathered: list[object] = [None] * world
        dist.all_gather_object(gathered, seconds)
        times = [float(t) for t in gathered]  # type: ignore[arg-type]
    callback.close()
    if rank == 0:
        summary = {k: v for k, v in metrics.items() if k.startswith("eval_attack_")}
        print("RESULT " + json.dumps({"world": world, "seconds": max(times), "summary": summary}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default="deepwordbug")
    parser.add_argument("--examples", type=int, default=40)
    parser.add_argument("--train-size", type=int, default=2000)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "loyalkit" / "bench")
    parser.add_argument("--child", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    options = ["--recipe", args.recipe, "--examples", str(args.examples)]
    options += ["--train-size", str(args.train_size), "--cache", str(args.cache), "--child"]
    results = {}
    for world in (1, 2):
        launcher = [sys.executable]
        if world > 1:
            launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
            launcher += ["--master_port", "29533"]
        done = subprocess.run(
            [*launcher, __file__, *options], capture_output=True, text=True, check=False
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if done.returncode != 0 or not lines:
            raise SystemExit(done.stderr[-3000:])
        results[world] = json.loads(lines[0].removeprefix("RESULT "))
    same = results[1]["summary"] == results[2]["summary"]
    print(
        f"{args.recipe}, {args.examples} SST-2 dev sentences, MiniLM-L6 teacher, 1 torch thread "
        f"per process, {os.cpu_count()} cores\n"
        f"| processes | attack wall time per evaluation (s) | speed-up |\n|---|---|---|\n"
        f"| 1 | {results[1]['seconds']:.1f} | 1.00x |\n"
        f"| 2 | {results[2]['seconds']:.1f} | "
        f"{results[1]['seconds'] / results[2]['seconds']:.2f}x |\n"
        f"same summary with 1 and 2 processes: {same}"
    )
    if not same:
        print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
