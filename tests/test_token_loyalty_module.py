"""The ``loyalty`` evaluate module's token level (``level="token"``), against scipy."""

from __future__ import annotations

import math

import evaluate
import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax, rel_entr, softmax

from loyalkit.metrics import module_path

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def loyalty() -> evaluate.EvaluationModule:
    return evaluate.load(str(module_path("loyalty")))


def _logits(seed: int, n: int = 50, vocab: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    teacher = rng.normal(scale=3.0, size=(n, vocab))
    return teacher + rng.normal(size=(n, vocab)), teacher, rng.integers(0, vocab, size=n)


def test_token_level_in_batches_matches_scipy(loyalty):
    student, teacher, tokens = _logits(0)
    for rows in (slice(0, 20), slice(20, 50)):  # torch batches, as a generation loop gives them
        loyalty.add_batch(
            predictions=torch.from_numpy(student[rows]), references=torch.from_numpy(teacher[rows])
        )
    result = loyalty.compute(level="token", labels=tokens)
    p, q = softmax(teacher, axis=1), softmax(student, axis=1)
    kl = rel_entr(p, q).sum(axis=1)
    rows = np.arange(len(tokens))
    assert result["num_tokens"] == 50
    assert result["label_loyalty"] == pytest.approx((p.argmax(1) == q.argmax(1)).mean())
    assert result["probability_loyalty"] == pytest.approx(
        (1 - jensenshannon(p, q, axis=1)).mean(), rel=1e-9
    )
    assert result["kl_divergence"]["mean"] == pytest.approx(kl.mean(), rel=1e-9)
    assert result["kl_divergence"]["percentiles"]["median"] == pytest.approx(
        np.median(kl), rel=1e-6
    )
    delta_p = q[rows, tokens] - p[rows, tokens]
    assert result["delta_p"]["rms"] == pytest.approx(math.sqrt((delta_p**2).mean()))
    nll = -log_softmax(student, axis=1)[rows, tokens].mean()
    nll_teacher = -log_softmax(teacher, axis=1)[rows, tokens].mean()
    assert result["ppl_ratio"] == pytest.approx(math.exp(nll - nll_teacher))


def test_without_reference_tokens_only_the_distribution_measures(loyalty):
    student, teacher, _ = _logits(1)
    result = loyalty.compute(
        predictions=student.tolist(), references=teacher.tolist(), level="token"
    )
    assert "delta_p" not in result and "ppl_ratio" not in result
    assert result["label_loyalty"] == pytest.approx((student.argmax(1) == teacher.argmax(1)).mean())


@pytest.mark.parametrize(
    ("student", "teacher", "kwargs", "message"),
    [
        ([[0.0, 1.0], [0.0]], [[0.0, 1.0], [1.0, 0.0]], {}, "ragged rows"),
        ([[0.0, float("nan")]], [[0.0, 1.0]], {}, "NaN"),
        ([[0.0, 1.0]], [[0.0, 1.0]], {"labels": [2]}, "out of range"),
        ([[0.0, 1.0]], [[0.0, 1.0]], {"labels": [0, 1]}, "one token per position"),
        ([[0.0, 1.0]], [[0.0, 1.0]], {"level": "word"}, "`level`"),
    ],
)
def test_token_level_inputs_are_checked(loyalty, student, teacher, kwargs, message):
    with pytest.raises((TypeError, ValueError), match=message):
        loyalty.compute(predictions=student, references=teacher, **{"level": "token", **kwargs})


def test_different_vocabularies_are_refused():
    from loyalkit.metrics.token_loyalty import token_loyalty

    with pytest.raises(ValueError, match="same vocabulary"):
        token_loyalty([[0.0, 1.0, 2.0]], [[0.0, 1.0]])
