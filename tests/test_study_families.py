"""The study with teachers of other families than BERT: every method builds, saves and reloads a student.

Each teacher is a tiny classifier of its family, fitted to the tiny sentiment task with the tiny
WordPiece tokenizer (the same token ids for every family); the study then runs int8 PTQ, magnitude
pruning, head pruning, feed-forward pruning, layer dropping, logit KD and BERT-of-Theseus on it. Numbers are recomputed from the saved
models with sklearn; methods that cannot apply must fail their run with an error naming the reason.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score
from study_helpers import LABEL_NAMES, read_split, write_split
from tiny_architectures import tiny_classifier
from tiny_bert import fit_full_batch, write_vocab

from loyalkit.study.config import StudyConfig
from loyalkit.study.measure import load_student
from loyalkit.study.runner import run_study


def _write_teacher(folder: Path, arch: str, train_file: Path) -> None:
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True)
    vocab = str(write_vocab(folder))
    # Only BERT-style encoders read segments (a decoder would embed token_type_ids as tokens), so
    # the tokenizer leaves them out, as DistilBERT's, GPT-2's and Llama's own tokenizers do; an
    # init argument, so that transformers 4.57 saves it too.
    tokenizer = BertTokenizerFast(
        vocab_file=vocab,
        vocab=vocab,
        model_max_length=64,
        model_input_names=["input_ids", "attention_mask"],
    )
    assert tokenizer.convert_tokens_to_ids("movie") != tokenizer.unk_token_id
    tokenizer.save_pretrained(folder)
    model = tiny_classifier(
        arch, layers=2, seed=1, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id
    ).train()
    texts, labels = read_split(train_file)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    fit_full_batch(model, batch, labels, 30)
    model.config.id2label = dict(enumerate(LABEL_NAMES))
    model.config.label2id = {name: i for i, name in enumerate(LABEL_NAMES)}
    model.eval().save_pretrained(folder)


def _study(root: Path, arch: str) -> dict[str, Any]:
    train, dev = write_split(root / "train.tsv", 48, seed=0), write_split(root / "dev.tsv", 16, 1)
    _write_teacher(root / "teacher", arch, train)
    short = {"epochs": 1, "batch_size": 16}
    config = {
        "task": {"train_file": str(train), "validation_file": str(dev)},
        "teacher": {"model": str(root / "teacher"), "fine_tune": False, "max_length": 32},
        "methods": {
            "int8-ptq": {},
            "magnitude-pruning": {**short, "sparsities": [0.5]},
            "head-pruning": {**short, "share": 0.5, "num_batches": 1},
            "ffn-pruning": {**short, "share": 0.5, "num_batches": 1},
            "layer-dropping": {**short, "student_layers": 1},
            "kd-logit": {**short, "student_layers": 1, "learning_rate": 1e-3},
            "theseus": {**short, "student_layers": 1},
        },
        "attack": {"enabled": False},
        "measure": {"latency_repeats": 1, "latency_warmup": 0, "latency_batch_size": 8},
        "seeds": [0],
        "output_dir": str(root / "study"),
    }
    return run_study(StudyConfig.from_dict(config), progress=False)


def _predictions(model_dir: str, texts: list[str]) -> np.ndarray:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = load_student(model_dir)
    with torch.no_grad():
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        return model(**batch).logits.argmax(-1).numpy()


@pytest.mark.parametrize("arch", ["distilbert", "modernbert", "gpt2", "llama", "albert"])
def test_study_builds_every_student_of_other_families(arch: str, tmp_path: Path) -> None:
    results = _study(tmp_path, arch)
    runs = {run["method"]: run for run in results["runs"]}
    refused = {
        "albert": {
            "head-pruning": "shares",
            "theseus": "shares",
            "ffn-pruning": "shares",
            "layer-dropping": "shares",
        },
        # (GPT-2's int8 is written as OpenVINO IR: its Conv1D layers become int8 MatMuls there.)
    }.get(arch, {})
    texts, _ = read_split(tmp_path / "dev.tsv")
    teacher = _predictions(str(tmp_path / "teacher"), texts)
    for method, run in runs.items():
        if method in refused:
            assert run["status"] == "failed" and refused[method] in run["error"], run
            continue
        assert run["status"] == "done", (method, run.get("error"))
        student = _predictions(str(tmp_path / "study" / run["model_dir"]), texts)
        assert run["label_loyalty"] == pytest.approx(accuracy_score(teacher, student))
    assert runs["kd-logit"]["layers"] == 1
    if arch != "albert":
        assert runs["layer-dropping"]["layers"] == 1
