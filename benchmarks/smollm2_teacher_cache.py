"""How exact the top-k teacher cache is, on SmolLM2-135M-Instruct and WikiText-2.

The teacher runs once and its top-k log-probabilities are stored (safetensors); the int8 and int4
students are then scored against the cache and, for reference, exactly (teacher and student in
lockstep). Label loyalty, delta-p and the perplexity ratio must agree exactly; KL and probability
loyalty differ by the mass outside the top k (KL from the cache is a lower bound).

    .venv/bin/python benchmarks/smollm2_teacher_cache.py --max-tokens 2048 --top-k 64
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from smollm2_model import smollm2_folder  # noqa: E402

from loyalkit.compression.causal_lm_loading import StudentCompression, student_from_teacher  # noqa: E402
from loyalkit.metrics.lm_compare import (  # noqa: E402
    TeacherCache,
    WindowConfig,
    build_teacher_cache,
    compare_causal_lms,
    compare_with_teacher_cache,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--top-k", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "smollm2_teacher_cache.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_folder()
    teacher = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    text = (ROOT / ".." / "shared" / "data" / "wikitext2" / "test.txt").read_text()
    tokens = AutoTokenizer.from_pretrained(folder)(text[: args.max_tokens * 8], verbose=False)
    tokens = tokens["input_ids"][: args.max_tokens]
    config = WindowConfig(window=512, stride=256, batch_size=2)
    start = time.perf_counter()
    full = build_teacher_cache(teacher, tokens, config, top_k=max(args.top_k))
    teacher_s = time.perf_counter() - start
    report: dict = {"tokens": len(tokens), "teacher_pass_s": teacher_s, "students": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for quantize in ("int8", "int4-weight-only"):
            student, _ = student_from_teacher(teacher, StudentCompression(quantize=quantize))
            exact = compare_causal_lms(teacher, student, tokens, config)
            rows = {"exact": exact}
            for k in args.top_k:
                cache = TeacherCache(
                    full.token_ids,
                    full.window,
                    full.stride,
                    full.topk_ids[:, :k],
                    full.topk_logprobs[:, :k],
                    full.target_logprobs,
                )
                path = cache.save(Path(tmp) / f"top{k}.safetensors")
                rows[f"top{k}"] = compare_with_teacher_cache(TeacherCache.load(path), student)
                rows[f"top{k}"]["file_mb"] = path.stat().st_size / 2**20
            report["students"][quantize] = rows
            print(quantize, json.dumps({k: _short(v) for k, v in rows.items()}), flush=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _short(result: dict) -> dict:
    return {
        "label_loyalty": round(result["label_loyalty"], 6),
        "probability_loyalty": round(result["probability_loyalty"], 6),
        "kl_mean": round(result["kl_divergence"]["mean"], 6),
        "kl_99": round(result["kl_divergence"]["percentiles"]["99%"], 6),
        "ppl_ratio": round(result["ppl_ratio"], 6),
        "file_mb": round(result.get("file_mb", 0.0), 2),
    }


if __name__ == "__main__":
    main()
