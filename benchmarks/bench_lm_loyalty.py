"""Token-level loyalty, streaming against the naive way, on the same real model pair.

Naive: run both models over the windows, keep both full log-softmax arrays for the corpus
(float32, tokens x vocabulary each), then per position ``scipy.spatial.distance.jensenshannon`` and
``scipy.special.rel_entr``. Streaming: :func:`loyalkit.metrics.lm_compare` pieces (what
``batch_statistics`` does): each model's hidden states at the scored positions, then a chunk of rows
at a time both models' logits from their output layers and the statistics. Each runs in its own process; the peak memory is the kernel's high-water
mark of resident memory (``VmHWM``, reset through ``/proc/self/clear_refs`` once both models are
loaded and glibc's free memory is trimmed), so it counts what the comparison itself needs beyond
the two models. Teacher:
SmolLM2-135M-Instruct (tests/smollm2_model.py); student: the teacher with 50% magnitude pruning
(float32 like the teacher, so both forward passes cost the same). One thread.

A third process (``precision``, untimed) compares the streaming per-token values (computed in
float32, the logits' precision) with a float64 reference written the textbook way: float64
log-softmax, then ``sum p (log p - log q)`` and the Jensen-Shannon divergence through the mixture.

    .venv/bin/python benchmarks/bench_lm_loyalty.py --max-tokens 8192
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _peak_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _float64_reference(student_logits, teacher_logits):
    import torch

    log_p = torch.log_softmax(teacher_logits.double(), dim=-1)
    log_q = torch.log_softmax(student_logits.double(), dim=-1)
    p, q = log_p.exp(), log_q.exp()
    log_m = torch.log(((p + q) * 0.5).clamp_min(torch.finfo(torch.float64).tiny))
    jsd = 0.5 * ((p * (log_p - log_m)).sum(-1) + (q * (log_q - log_m)).sum(-1))
    return 1.0 - jsd.clamp_min(0.0).sqrt(), (p * (log_p - log_q)).sum(-1)


def measure(mode: str, max_tokens: int, window: int) -> dict:
    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT / "tests"))
    from smollm2_model import smollm2_folder
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from loyalkit.compression.causal_lm_loading import StudentCompression, student_from_teacher
    from loyalkit.metrics.lm_compare import (
        WindowConfig,
        row_chunks,
        scored_logits,
        scored_output,
        window_batches,
    )
    from loyalkit.metrics.token_loyalty import TokenLoyaltyAccumulator, token_statistics

    torch.set_num_threads(1)
    folder = smollm2_folder()
    teacher = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    student, _ = student_from_teacher(teacher, StudentCompression(prune=0.5))
    text = (ROOT / ".." / "shared" / "data" / "wikitext2" / "test.txt").read_text()
    tokens = AutoTokenizer.from_pretrained(folder)(text[: max_tokens * 8], verbose=False)
    tokens = tokens["input_ids"][:max_tokens]
    config = WindowConfig(window=window, stride=window, batch_size=1)
    batches = list(window_batches(tokens, config))
    scored = sum(int(b.targets.numel()) for b in batches)
    # Hand memory that the allocator keeps from loading back to the system first: otherwise later
    # allocations reuse it without raising the resident size, and the peak reads anywhere from
    # 7 MB to 295 MB for the same streaming run (measured).
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    base_kb = _status_kb("VmRSS")
    _peak_reset()
    forward_s = stats_s = 0.0
    with torch.inference_mode():
        if mode == "streaming":
            accumulator = TokenLoyaltyAccumulator()
            # The pieces of `compare_causal_lms` (via `batch_statistics`), timed apart: the
            # forward passes and each chunk's output layer count as forward, the rest statistics.
            for batch in batches:
                start = time.perf_counter()
                teacher_out = scored_output(teacher, batch)
                student_out = scored_output(student, batch)
                forward_s += time.perf_counter() - start
                for first, stop in row_chunks(teacher_out, student_out):
                    start = time.perf_counter()
                    t = teacher_out.logits(first, stop)
                    s = student_out.logits(first, stop)
                    middle = time.perf_counter()
                    accumulator.update(token_statistics(s, t, batch.targets[first:stop]))
                    forward_s += middle - start
                    stats_s += time.perf_counter() - middle
                del teacher_out, student_out, t, s
            result = accumulator.result()
            summary = {
                "label_loyalty": result["label_loyalty"],
                "probability_loyalty": result["probability_loyalty"],
                "kl_mean": result["kl_divergence"]["mean"],
            }
        elif mode == "precision":
            errors = {"probability_loyalty_abs": 0.0, "kl_abs": 0.0, "kl_rel": 0.0}
            for batch in batches:
                t = scored_logits(teacher, batch)
                s = scored_logits(student, batch)
                stats = token_statistics(s, t, batch.targets)
                loyalty, kl = _float64_reference(s, t)
                kl_error = (stats.kl - kl).abs()
                errors["probability_loyalty_abs"] = max(
                    errors["probability_loyalty_abs"],
                    float((stats.probability_loyalty - loyalty).abs().max()),
                )
                errors["kl_abs"] = max(errors["kl_abs"], float(kl_error.max()))
                errors["kl_rel"] = max(errors["kl_rel"], float((kl_error / kl).max()))
                errors["kl_min"] = min(errors.get("kl_min", float("inf")), float(kl.min()))
            summary = {"max_error_vs_float64": errors}
        else:
            from scipy.spatial.distance import jensenshannon
            from scipy.special import rel_entr

            vocab = teacher.config.vocab_size
            log_t = np.empty((scored, vocab), dtype=np.float32)
            log_s = np.empty((scored, vocab), dtype=np.float32)
            targets = np.empty(scored, dtype=np.int64)
            row = 0
            start = time.perf_counter()
            for batch in batches:
                n = int(batch.targets.numel())
                log_t[row : row + n] = torch.log_softmax(scored_logits(teacher, batch), -1).numpy()
                log_s[row : row + n] = torch.log_softmax(scored_logits(student, batch), -1).numpy()
                targets[row : row + n] = batch.targets.numpy()
                row += n
            forward_s = time.perf_counter() - start
            start = time.perf_counter()
            agree, loyal, kl = np.empty(scored, bool), np.empty(scored), np.empty(scored)
            for i in range(scored):
                p = np.exp(log_t[i].astype(np.float64))
                q = np.exp(log_s[i].astype(np.float64))
                agree[i] = p.argmax() == q.argmax()
                loyal[i] = 1.0 - jensenshannon(p, q)
                kl[i] = rel_entr(p, q).sum()
            stats_s = time.perf_counter() - start
            summary = {
                "label_loyalty": float(agree.mean()),
                "probability_loyalty": float(loyal.mean()),
                "kl_mean": float(kl.mean()),
            }
    return {
        "mode": mode,
        "scored_tokens": scored,
        "vocabulary": teacher.config.vocab_size,
        "peak_extra_mb": (_status_kb("VmHWM") - base_kb) / 1024,
        "forward_s": forward_s,
        "statistics_s": stats_s,
        "total_s": forward_s + stats_s,
        **summary,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=8192)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--mode", choices=("streaming", "naive", "precision"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "bench_lm_loyalty.json"))
    args = parser.parse_args()
    if args.mode:  # the child process
        print(json.dumps(measure(args.mode, args.max_tokens, args.window)))
        return
    results = {}
    for mode in (
        "streaming",
        "naive",
        "precision",
    ):  # one after the other: never two heavy runs at once
        command = [sys.executable, __file__, "--mode", mode, "--max-tokens", str(args.max_tokens)]
        command += ["--window", str(args.window)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
        print(json.dumps(results[mode]), flush=True)
    streaming, naive = results["streaming"], results["naive"]
    results["ratios"] = {
        "peak_memory_naive_over_streaming": naive["peak_extra_mb"] / streaming["peak_extra_mb"],
        "time_naive_over_streaming": naive["total_s"] / streaming["total_s"],
        "streaming_statistics_share_of_forward": streaming["statistics_s"] / streaming["forward_s"],
    }
    print(json.dumps(results["ratios"], indent=2))
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
