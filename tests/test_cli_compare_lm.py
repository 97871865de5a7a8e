"""``loyalkit compare lm`` on tiny local Llama folders."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr, softmax
from tiny_causal_lm import save_tiny_lm_pair
from transformers import AutoModelForCausalLM, AutoTokenizer

from loyalkit.cli import main

torch.set_num_threads(1)

CORPUS = (
    "The tower is 324 metres tall, about the same height as an 81-storey building. "
    "It was the tallest man-made structure in the world for 41 years. "
) * 3


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lm")
    teacher, student = save_tiny_lm_pair(folder)
    data = folder / "corpus.txt"
    data.write_text(CORPUS, encoding="utf-8")
    return teacher, student, data


def _run(args, capsys) -> tuple[int, str]:
    status = main(["compare", "lm", "--quiet", *args])
    return status, capsys.readouterr().out


def test_report_keys_and_values_against_scipy(pair, tmp_path, capsys):
    teacher, student, data = pair
    out = tmp_path / "report.json"
    status, printed = _run(
        [
            "--teacher",
            str(teacher),
            "--student",
            str(student),
            "--data",
            str(data),
            "--window",
            "120",
            "--max-tokens",
            "120",
            "--output",
            str(out),
        ],
        capsys,
    )
    assert status == 0
    assert "| label loyalty (same top-1 token)" in printed
    report = json.loads(out.read_text())
    for key in ("label_loyalty", "probability_loyalty", "ppl_ratio", "num_tokens"):
        assert key in report
    assert set(report["kl_divergence"]) == {"mean", "stderr", "percentiles"}
    assert set(report["delta_p"]) == {"mean", "rms"}
    # The first 120 tokens make one window: the whole sequence at once, checked with scipy.
    ids = AutoTokenizer.from_pretrained(teacher)(CORPUS, return_tensors="pt").input_ids[:, :120]
    with torch.no_grad():
        t = AutoModelForCausalLM.from_pretrained(teacher)(ids).logits[0, :-1].double().numpy()
        s = AutoModelForCausalLM.from_pretrained(student)(ids).logits[0, :-1].double().numpy()
    p, q = softmax(t, axis=1), softmax(s, axis=1)
    assert report["num_tokens"] == ids.shape[1] - 1
    assert report["label_loyalty"] == pytest.approx((t.argmax(1) == s.argmax(1)).mean())
    assert report["probability_loyalty"] == pytest.approx(
        (1 - jensenshannon(p, q, axis=1)).mean(), rel=1e-5
    )
    assert report["kl_divergence"]["mean"] == pytest.approx(
        rel_entr(p, q).sum(axis=1).mean(), rel=1e-4
    )


def test_jsonl_windows_and_max_tokens(pair, tmp_path, capsys):
    teacher, student, _ = pair
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps({"body": CORPUS}) for _ in range(3)), encoding="utf-8")
    out = tmp_path / "report.json"
    args = [
        "--teacher",
        str(teacher),
        "--student",
        str(student),
        "--data",
        str(data),
        "--text-field",
        "body",
        "--window",
        "32",
        "--stride",
        "16",
        "--max-tokens",
        "100",
        "--batch-size",
        "3",
        "--output",
        str(out),
    ]
    assert _run(args, capsys)[0] == 0
    report = json.loads(out.read_text())
    assert report["num_tokens"] == 99
    assert report["settings"]["window"] == 32 and report["settings"]["stride"] == 16


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--student-prune", "0.5"], "50% magnitude pruning of 14 decoder Linear weights"),
        (["--student-quantize", "int8"], "int8 dynamic quantization (torchao) of 14"),
        (["--student-quantize", "int4-weight-only"], "int4 weight-only quantization"),
    ],
)
def test_student_built_from_the_teacher(pair, tmp_path, capsys, flags, expected):
    teacher, _, data = pair
    out = tmp_path / "report.json"
    args = [
        "--teacher",
        str(teacher),
        "--data",
        str(data),
        "--window",
        "64",
        *flags,
        "--output",
        str(out),
    ]
    assert _run(args, capsys)[0] == 0
    report = json.loads(out.read_text())
    assert report["student"].startswith(expected)
    assert report["kl_divergence"]["mean"] > 0  # the compression changed the model


def test_teacher_cache_then_students(pair, tmp_path, capsys):
    teacher, student, data = pair
    cache = tmp_path / "teacher.safetensors"
    common = ["--window", "64", "--stride", "32"]
    args = ["--teacher", str(teacher), "--data", str(data), "--save-teacher-cache", str(cache)]
    assert _run([*args, "--top-k", "16", *common], capsys)[0] == 0
    exact, cached = tmp_path / "exact.json", tmp_path / "cached.json"
    args = ["--teacher", str(teacher), "--student", str(student), "--data", str(data), *common]
    assert _run([*args, "--output", str(exact)], capsys)[0] == 0
    status, printed = _run(
        ["--teacher-cache", str(cache), "--student", str(student), "--output", str(cached)],
        capsys,
    )
    assert status == 0 and "top-16" in printed
    exact_report, cached_report = json.loads(exact.read_text()), json.loads(cached.read_text())
    assert cached_report["num_tokens"] == exact_report["num_tokens"]
    assert cached_report["label_loyalty"] == exact_report["label_loyalty"]
    assert cached_report["ppl_ratio"] == pytest.approx(exact_report["ppl_ratio"], rel=1e-5)
    assert cached_report["kl_divergence"]["mean"] <= exact_report["kl_divergence"]["mean"]
    assert np.isfinite(cached_report["probability_loyalty"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--student", "x", "--student-prune", "0.5", "--teacher", "t", "--data", "d"], "not both"),
        (["--teacher", "t", "--data", "d"], "no student"),
        (["--student-prune", "0.5", "--data", "d"], "give --teacher"),
        (["--student", "s", "--teacher", "t"], "--data"),
        (
            ["--teacher", "t", "--student", "s", "--save-teacher-cache", "c"],
            "only runs the teacher",
        ),
        (["--teacher", "t", "--data", "missing.txt", "--student-prune", "0.5"], "does not exist"),
    ],
)
def test_bad_arguments_are_one_line_errors(args, message, capsys):
    assert main(["compare", "lm", "--quiet", *args]) == 1
    assert message in capsys.readouterr().err


def test_prune_share_is_checked(pair, capsys):
    teacher, _, data = pair
    args = ["--teacher", str(teacher), "--data", str(data), "--student-prune", "1.5"]
    assert main(["compare", "lm", "--quiet", *args]) == 1
    assert "`prune` must be a share of weights in (0, 1)" in capsys.readouterr().err


def test_jsonl_without_the_field_is_an_error(pair, tmp_path, capsys):
    teacher, student, _ = pair
    data = tmp_path / "docs.jsonl"
    data.write_text(json.dumps({"content": "x"}) + "\n", encoding="utf-8")
    args = ["--teacher", str(teacher), "--student", str(student), "--data", str(data)]
    assert main(["compare", "lm", "--quiet", *args]) == 1
    assert "no string field 'text'" in capsys.readouterr().err


def test_model_sources_folder_gguf_and_hub_id(tmp_path):
    from loyalkit.compression.causal_lm_loading import _source

    gguf = tmp_path / "model.Q4_1.gguf"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _source(str(gguf))
    gguf.write_bytes(b"GGUF")
    assert _source(str(gguf)) == (str(tmp_path), {"gguf_file": "model.Q4_1.gguf"})
    assert _source(str(tmp_path)) == (str(tmp_path), {})
    assert _source("HuggingFaceTB/SmolLM2-135M") == ("HuggingFaceTB/SmolLM2-135M", {})
    other = tmp_path / "weights.bin"
    other.write_bytes(b"")
    with pytest.raises(ValueError, match="not a .gguf file"):
        _source(str(other))


def test_cli_quantization_choices_are_the_library_ones():
    from loyalkit.cli import compare
    from loyalkit.compression import causal_lm_loading

    assert compare.QUANTIZATIONS == causal_lm_loading.QUANTIZATIONS
