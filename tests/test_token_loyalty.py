"""Token-level loyalty math, checked against scipy and numpy on the full arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax, rel_entr, softmax

from loyalkit.metrics import token_loyalty
from loyalkit.metrics.token_loyalty import (
    KL_PERCENTILES,
    TokenLoyaltyAccumulator,
    token_statistics,
    topk_token_statistics,
)

torch.set_num_threads(1)


def _pair(n: int = 60, vocab: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    teacher = rng.normal(scale=3.0, size=(n, vocab))
    student = teacher + rng.normal(scale=1.0, size=(n, vocab))
    targets = rng.integers(0, vocab, size=n)
    return student, teacher, targets


def _scipy_report(student: np.ndarray, teacher: np.ndarray, targets: np.ndarray) -> dict:
    p, q = softmax(teacher, axis=1), softmax(student, axis=1)
    kl = rel_entr(p, q).sum(axis=1)
    rows = np.arange(len(targets))
    delta_p = q[rows, targets] - p[rows, targets]
    nll_t = -log_softmax(teacher, axis=1)[rows, targets]
    nll_s = -log_softmax(student, axis=1)[rows, targets]
    return {
        "agree": teacher.argmax(axis=1) == student.argmax(axis=1),
        "loyalty": 1.0 - jensenshannon(p, q, axis=1),
        "kl": kl,
        "delta_p": delta_p,
        "ppl_ratio": math.exp(nll_s.mean()) / math.exp(nll_t.mean()),
    }


def _run(student, teacher, targets, splits=(0,)) -> dict:
    accumulator = TokenLoyaltyAccumulator()
    bounds = [*splits, len(targets)]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        accumulator.update(
            token_statistics(
                torch.from_numpy(student[start:stop]).float(),
                torch.from_numpy(teacher[start:stop]).float(),
                torch.from_numpy(targets[start:stop]),
            )
        )
    return accumulator.result()


def test_per_token_values_match_scipy():
    student, teacher, targets = _pair()
    stats = token_statistics(
        torch.from_numpy(student), torch.from_numpy(teacher), torch.from_numpy(targets)
    )
    expected = _scipy_report(student, teacher, targets)
    np.testing.assert_array_equal(stats.agree.numpy(), expected["agree"])
    np.testing.assert_allclose(stats.probability_loyalty.numpy(), expected["loyalty"], rtol=1e-10)
    np.testing.assert_allclose(stats.kl.numpy(), expected["kl"], rtol=1e-10)
    np.testing.assert_allclose(stats.delta_p.numpy(), expected["delta_p"], atol=1e-12)


def test_report_matches_scipy_and_numpy_over_uneven_batches():
    student, teacher, targets = _pair(n=97)
    result = _run(student, teacher, targets, splits=(0, 10, 11, 60))
    expected = _scipy_report(student, teacher, targets)
    kl = expected["kl"]
    assert result["num_tokens"] == 97
    assert result["label_loyalty"] == pytest.approx(expected["agree"].mean(), abs=1e-12)
    # float32 logits in, as models give them: agreement within float32 rounding.
    assert result["probability_loyalty"] == pytest.approx(expected["loyalty"].mean(), rel=1e-5)
    assert result["kl_divergence"]["mean"] == pytest.approx(kl.mean(), rel=1e-5)
    assert result["kl_divergence"]["stderr"] == pytest.approx(
        kl.std(ddof=1) / math.sqrt(len(kl)), rel=1e-4
    )
    for name, q in KL_PERCENTILES:
        assert result["kl_divergence"]["percentiles"][name] == pytest.approx(
            np.percentile(kl, q), rel=1e-4
        )
    assert result["kl_divergence"]["percentiles"]["max"] == pytest.approx(kl.max(), rel=1e-5)
    assert result["delta_p"]["mean"] == pytest.approx(expected["delta_p"].mean(), abs=1e-6)
    assert result["delta_p"]["rms"] == pytest.approx(
        math.sqrt((expected["delta_p"] ** 2).mean()), rel=1e-5
    )
    assert result["ppl_ratio"] == pytest.approx(expected["ppl_ratio"], rel=1e-5)


def test_chunking_over_positions_changes_nothing(monkeypatch):
    student, teacher, targets = _pair(n=33)
    whole = _run(student, teacher, targets)
    monkeypatch.setattr(token_loyalty, "_CHUNK_ELEMENTS", 3 * 40)  # 3 positions per chunk
    chunked = _run(student, teacher, targets)
    assert chunked["num_tokens"] == whole["num_tokens"]
    assert chunked["label_loyalty"] == whole["label_loyalty"]
    assert chunked["kl_divergence"]["mean"] == pytest.approx(whole["kl_divergence"]["mean"])
    assert chunked["probability_loyalty"] == pytest.approx(whole["probability_loyalty"])


def test_identical_models_are_perfectly_loyal():
    _, teacher, targets = _pair()
    result = _run(teacher, teacher, targets)
    assert result["label_loyalty"] == 1.0
    assert result["probability_loyalty"] == 1.0
    assert result["kl_divergence"]["mean"] == 0.0
    assert result["delta_p"] == {"mean": 0.0, "rms": 0.0}
    assert result["ppl_ratio"] == 1.0


def test_kl_stderr_is_exact_for_tiny_alike_values():
    # Sum-of-squares formulas lose all digits here; the merged update must not.
    accumulator = TokenLoyaltyAccumulator()
    values = 1e-3 + np.arange(8) * 1e-12
    for half in np.split(values, 2):
        zeros = torch.zeros(len(half), dtype=torch.float64)
        stats = token_loyalty.TokenStatistics(
            zeros.bool(), zeros, torch.from_numpy(half), zeros, zeros, zeros
        )
        accumulator.update(stats)
    stderr = accumulator.result()["kl_divergence"]["stderr"]
    assert stderr == pytest.approx(values.std(ddof=1) / math.sqrt(8), rel=1e-6)


def _coarse_grained(p: np.ndarray, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's top k outcomes plus one tail bucket, for both distributions (numpy)."""
    order = np.argsort(-p, axis=1)[:, :k]
    p_top = np.take_along_axis(p, order, axis=1)
    q_top = np.take_along_axis(q, order, axis=1)
    p_coarse = np.concatenate([p_top, 1 - p_top.sum(axis=1, keepdims=True)], axis=1)
    q_coarse = np.concatenate([q_top, 1 - q_top.sum(axis=1, keepdims=True)], axis=1)
    return p_coarse, q_coarse


@pytest.mark.parametrize("k", [1, 5, 39])
def test_topk_statistics_are_the_coarse_grained_divergences(k):
    student, teacher, targets = _pair()
    p, q = softmax(teacher, axis=1), softmax(student, axis=1)
    log_p = torch.log_softmax(torch.from_numpy(teacher), dim=-1)
    values, ids = log_p.topk(k, dim=-1)
    rows = torch.arange(len(targets))
    stats = topk_token_statistics(
        torch.from_numpy(student), ids, values, log_p[rows, targets], torch.from_numpy(targets)
    )
    exact = _scipy_report(student, teacher, targets)
    p_coarse, q_coarse = _coarse_grained(p, q, k)
    np.testing.assert_allclose(
        stats.kl.numpy(), rel_entr(p_coarse, q_coarse).sum(axis=1), atol=1e-9
    )
    np.testing.assert_allclose(
        stats.probability_loyalty.numpy(),
        1 - jensenshannon(p_coarse, q_coarse, axis=1),
        atol=1e-7,
    )
    # Exact whatever k is: agreement, delta-p; bounds: KL below, loyalty above the exact values.
    np.testing.assert_array_equal(stats.agree.numpy(), exact["agree"])
    np.testing.assert_allclose(stats.delta_p.numpy(), exact["delta_p"], atol=1e-12)
    assert (stats.kl.numpy() <= exact["kl"] + 1e-12).all()
    assert (stats.probability_loyalty.numpy() >= exact["loyalty"] - 1e-12).all()


def test_topk_with_the_whole_vocabulary_is_exact():
    student, teacher, targets = _pair(vocab=12)
    log_p = torch.log_softmax(torch.from_numpy(teacher), dim=-1)
    values, ids = log_p.topk(12, dim=-1)
    rows = torch.arange(len(targets))
    stats = topk_token_statistics(
        torch.from_numpy(student), ids, values, log_p[rows, targets], torch.from_numpy(targets)
    )
    exact = _scipy_report(student, teacher, targets)
    np.testing.assert_allclose(stats.kl.numpy(), exact["kl"], atol=1e-9)
    np.testing.assert_allclose(stats.probability_loyalty.numpy(), exact["loyalty"], atol=1e-6)


@pytest.mark.parametrize(
    ("student", "teacher", "targets", "message"),
    [
        ([[0.0, 1.0]], torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), "torch.Tensor"),
        (torch.zeros(2), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), "2-D logits"),
        (torch.zeros(1, 3), torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), "same shape"),
        (torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(1, dtype=torch.long), "one token"),
        (torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1), "token ids"),
    ],
)
def test_bad_inputs_name_the_argument(student, teacher, targets, message):
    with pytest.raises((TypeError, ValueError), match=message):
        token_statistics(student, teacher, targets)


def test_empty_accumulator_is_an_error():
    with pytest.raises(ValueError, match="no token was scored"):
        TokenLoyaltyAccumulator().result()


def _mpmath_reference(student: np.ndarray, teacher: np.ndarray) -> tuple[list, list]:
    """Probability loyalty and KL per row with 50 significant digits (mpmath), from the same logits."""
    import mpmath

    loyalty, kl = [], []
    with mpmath.workdps(50):
        for s_row, t_row in zip(student, teacher, strict=True):
            t_log = [mpmath.mpf(float(x)) for x in t_row]
            s_log = [mpmath.mpf(float(x)) for x in s_row]
            t_lse = mpmath.log(mpmath.fsum(map(mpmath.exp, t_log)))
            s_lse = mpmath.log(mpmath.fsum(map(mpmath.exp, s_log)))
            log_p = [x - t_lse for x in t_log]
            log_q = [x - s_lse for x in s_log]
            p, q = [mpmath.exp(x) for x in log_p], [mpmath.exp(x) for x in log_q]
            m = [(a + b) / 2 for a, b in zip(p, q, strict=True)]
            jsd = mpmath.fsum(
                (a * (la - mpmath.log(c)) + b * (lb - mpmath.log(c))) / 2
                for a, b, la, lb, c in zip(p, q, log_p, log_q, m, strict=True)
            )
            loyalty.append(1 - mpmath.sqrt(jsd))
            kl.append(mpmath.fsum(a * (la - lb) for a, la, lb in zip(p, log_p, log_q, strict=True)))
    return [float(x) for x in loyalty], [float(x) for x in kl]


# Float32 logits (what models give): far-apart rows, and near-identical rows whose logits differ by
# a constant shift (the softmax ignores it) plus noise of 1e-3 and 1e-5, where a textbook formula
# cancels two order-one sums. Bounds: about 10x the largest errors measured against 50-digit
# arithmetic (loyalty 2.8e-8, 1.2e-8, 6.2e-9; KL relative 9.2e-8, 5.8e-5, 2.6e-3 = 9e-14 absolute
# on a KL of 2.4e-11, below what float32 logits resolve). Float64 logits, same formulas: loyalty
# within 1.2e-16 and KL within 8e-12 relative (the textbook float64 formulas: 1.1e-5 on the last).
@pytest.mark.parametrize(
    ("noise", "shift", "loyalty_atol", "kl_rtol"),
    [(1.0, 0.0, 3e-7, 1e-6), (1e-3, 5.0, 1.2e-7, 6e-4), (1e-5, -3.0, 6e-8, 3e-2)],
)
def test_logits_keep_their_precision(noise, shift, loyalty_atol, kl_rtol):
    rng = np.random.default_rng(7)
    teacher = (rng.normal(scale=3.0, size=(6, 300))).astype(np.float32)
    student = (teacher + shift + rng.normal(scale=noise, size=teacher.shape)).astype(np.float32)
    loyalty, kl = _mpmath_reference(student, teacher)
    targets = torch.zeros(6, dtype=torch.long)
    single = token_statistics(torch.from_numpy(student), torch.from_numpy(teacher), targets)
    np.testing.assert_allclose(
        single.probability_loyalty.numpy(), loyalty, rtol=0, atol=loyalty_atol
    )
    np.testing.assert_allclose(single.kl.numpy(), kl, rtol=kl_rtol)
    double = token_statistics(
        torch.from_numpy(student).double(), torch.from_numpy(teacher).double(), targets
    )
    np.testing.assert_allclose(double.probability_loyalty.numpy(), loyalty, rtol=0, atol=1e-15)
    np.testing.assert_allclose(double.kl.numpy(), kl, rtol=1e-10)
