"""The loyalty math against independent computations: scipy, sklearn and hand calculations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr, softmax
from sklearn.metrics import accuracy_score

from loyalkit.metrics import (
    flip_rates,
    kl_divergence,
    label_loyalty,
    label_loyalty_per_class,
    loyalty,
    probability_loyalty,
    probability_loyalty_per_example,
)

SHAPES = [(1, 2), (7, 2), (50, 3), (333, 5), (1000, 11)]


def random_logits(shape: tuple[int, int], seed: int, scale: float = 3.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=scale, size=shape)


def reference_probability_loyalty(student_p, teacher_p, base=None):
    return float(np.mean(1.0 - jensenshannon(teacher_p, student_p, axis=1, base=base)))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("base", [None, 2, 10])
def test_probability_loyalty_matches_scipy_jensenshannon(shape, base):
    student, teacher = random_logits(shape, 1), random_logits(shape, 2)
    expected = reference_probability_loyalty(softmax(student, 1), softmax(teacher, 1), base)
    ours = probability_loyalty(student, teacher, input_type="logits", base=base)
    assert ours == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_probability_input_matches_scipy_per_example(shape):
    student_p = softmax(random_logits(shape, 3), 1)
    teacher_p = softmax(random_logits(shape, 4), 1)
    ours = probability_loyalty_per_example(student_p, teacher_p, input_type="probabilities")
    expected = 1.0 - jensenshannon(teacher_p, student_p, axis=1)
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_label_loyalty_matches_sklearn_accuracy(shape):
    student, teacher = random_logits(shape, 5), random_logits(shape, 6)
    expected = accuracy_score(teacher.argmax(1), student.argmax(1))
    assert label_loyalty(student, teacher) == pytest.approx(expected)
    assert label_loyalty(student.argmax(1), teacher.argmax(1)) == pytest.approx(expected)
    # Mixed forms: student labels against teacher scores.
    assert label_loyalty(student.argmax(1), teacher) == pytest.approx(expected)


def test_natural_log_range_endpoints_by_hand():
    # Disjoint one-hot distributions: JSD = ln 2 nats, so the score is 1 - sqrt(ln 2) with the
    # natural log and exactly 0 with base 2.
    student, teacher = [[1.0, 0.0]], [[0.0, 1.0]]
    natural = probability_loyalty(student, teacher, input_type="probabilities")
    assert natural == pytest.approx(1 - math.sqrt(math.log(2)))
    assert probability_loyalty(student, teacher, input_type="probabilities", base=2) == 0.0
    assert probability_loyalty(teacher, teacher, input_type="probabilities") == 1.0


def test_small_case_by_hand():
    # p = (0.5, 0.5), q = (0.9, 0.1), m = (0.7, 0.3).
    p, q = np.array([0.5, 0.5]), np.array([0.9, 0.1])
    m = (p + q) / 2
    jsd = 0.5 * sum(p * np.log(p / m)) + 0.5 * sum(q * np.log(q / m))
    value = probability_loyalty([q], [p], input_type="probabilities")
    assert value == pytest.approx(1 - math.sqrt(jsd))
    assert jsd == pytest.approx(
        0.5 * (0.5 * math.log(5 / 7) + 0.5 * math.log(5 / 3))
        + 0.5 * (0.9 * math.log(9 / 7) + 0.1 * math.log(1 / 3))
    )


def test_identical_logits_give_exactly_one_despite_rounding():
    logits = random_logits((200, 3), 7, scale=30.0)
    assert probability_loyalty(logits, logits) == 1.0


def test_large_logits_are_stable():
    student = np.array([[1000.0, 0.0], [0.0, -1000.0]])
    teacher = np.array([[999.0, 0.0], [0.0, -1001.0]])
    value = probability_loyalty(student, teacher)
    assert math.isfinite(value) and value == pytest.approx(1.0)
    assert math.isfinite(kl_divergence(student, teacher))


@pytest.mark.parametrize("base", [None, 2])
def test_kl_divergence_matches_scipy_rel_entr(base):
    student, teacher = random_logits((120, 4), 8), random_logits((120, 4), 9)
    expected = rel_entr(softmax(teacher, 1), softmax(student, 1)).sum(1)
    expected = expected / (math.log(base) if base else 1.0)
    assert kl_divergence(student, teacher, base=base) == pytest.approx(expected.mean(), rel=1e-9)


def test_kl_is_infinite_when_student_rules_out_a_teacher_class():
    assert kl_divergence([[1.0, 0.0]], [[0.5, 0.5]], input_type="probabilities") == math.inf


def test_label_loyalty_per_class_by_hand():
    teacher = [0, 0, 0, 1, 1, 2]
    student = [0, 1, 0, 1, 0, 2]
    assert label_loyalty_per_class(student, teacher) == {0: 2 / 3, 1: 0.5, 2: 1.0}
    # A class the teacher never predicts is absent rather than a division by zero.
    assert label_loyalty_per_class([0, 1], [0, 0], num_classes=3) == {0: 0.5}


def test_flips_by_hand():
    gold = [0, 1, 1, 0, 1]
    teacher = [0, 1, 0, 1, 1]  # right, right, wrong, wrong, right
    student = [0, 0, 1, 1, 1]  # right, wrong, right, wrong, right
    result = flip_rates(student, teacher, gold)
    assert result["flips_correct_to_incorrect"] == pytest.approx(1 / 5)
    assert result["flips_incorrect_to_correct"] == pytest.approx(1 / 5)
    assert result["flips"] == pytest.approx(2 / 5)
    assert result["student_accuracy"] == pytest.approx(accuracy_score(gold, student))
    assert result["teacher_accuracy"] == pytest.approx(accuracy_score(gold, teacher))


def test_loyalty_report_combines_the_parts():
    student, teacher = random_logits((300, 3), 10), random_logits((300, 3), 11)
    gold = np.random.default_rng(12).integers(0, 3, 300)
    result = loyalty(student, teacher, labels=gold, return_disagreements=True)
    assert result["label_loyalty"] == pytest.approx(
        accuracy_score(teacher.argmax(1), student.argmax(1))
    )
    assert result["probability_loyalty"] == pytest.approx(
        reference_probability_loyalty(softmax(student, 1), softmax(teacher, 1))
    )
    assert (
        result["disagreements"] == np.flatnonzero(student.argmax(1) != teacher.argmax(1)).tolist()
    )
    assert result["worst_class_label_loyalty"] == min(result["label_loyalty_per_class"].values())
    assert result["num_examples"] == 300
    assert result["flips"] == pytest.approx(
        np.mean((student.argmax(1) == gold) != (teacher.argmax(1) == gold))
    )


def test_loyalty_with_labels_only_leaves_out_probability_metrics():
    result = loyalty([0, 1, 1], [0, 1, 0])
    assert "probability_loyalty" not in result and "kl_divergence" not in result
    assert result["label_loyalty"] == pytest.approx(2 / 3)


def test_bootstrap_interval_matches_scipy_directly():
    student, teacher = random_logits((400, 2), 13), random_logits((400, 2), 14)
    result = loyalty(student, teacher, confidence_level=0.9, n_resamples=500, seed=0)
    agree = (student.argmax(1) == teacher.argmax(1)).astype(float)
    expected = scipy.stats.bootstrap(
        (agree,),
        np.mean,
        confidence_level=0.9,
        n_resamples=500,
        method="percentile",
        rng=np.random.default_rng(0),
    ).confidence_interval
    assert result["label_loyalty_ci"] == pytest.approx((expected.low, expected.high))
    low, high = result["probability_loyalty_ci"]
    assert low < result["probability_loyalty"] < high


def test_bootstrap_of_constant_values_is_a_point():
    result = loyalty([0, 1, 1], [0, 1, 1], confidence_level=0.95, bootstrap_method="BCa")
    assert result["label_loyalty_ci"] == (1.0, 1.0)


def test_torch_tensors_are_accepted_including_autograd_and_bfloat16():
    student = torch.randn(20, 3, requires_grad=True)
    teacher = torch.randn(20, 3).to(torch.bfloat16)
    expected = reference_probability_loyalty(
        softmax(student.detach().numpy().astype(float), 1),
        softmax(teacher.float().numpy().astype(float), 1),
    )
    assert probability_loyalty(student, teacher) == pytest.approx(expected)
    assert label_loyalty(student.argmax(1), teacher.argmax(1)) == pytest.approx(
        accuracy_score(teacher.argmax(1).numpy(), student.argmax(1).numpy())
    )


# --- bad input: every case is a ValueError or TypeError naming the argument --------------------

BAD_INPUTS = [
    # (function, kwargs, exception, words the message must contain)
    (
        label_loyalty,
        {"predictions": [0, 1, 1], "references": [0, 1]},
        ValueError,
        ["predictions", "references", "3", "2"],
    ),
    (probability_loyalty, {"predictions": [], "references": []}, ValueError, ["empty"]),
    (label_loyalty, {"predictions": [], "references": [1]}, ValueError, ["predictions", "empty"]),
    (
        probability_loyalty,
        {"predictions": [[0.1, 0.2], [0.3]], "references": [[0.0, 1.0]] * 2},
        ValueError,
        ["predictions", "ragged"],
    ),
    (
        probability_loyalty,
        {"predictions": [[0.1, 0.2]], "references": [[0.1, 0.2, 0.3]]},
        ValueError,
        ["same number of classes", "2", "3"],
    ),
    (
        label_loyalty,
        {"predictions": [[0.1, 0.2]], "references": [[0.1, 0.2, 0.3]]},
        ValueError,
        ["same number of classes"],
    ),
    (
        probability_loyalty,
        {"predictions": [[1.0], [2.0]], "references": [[1.0], [2.0]]},
        ValueError,
        ["predictions", "at least 2 classes"],
    ),
    (
        label_loyalty,
        {"predictions": [0, 0], "references": [0, 0], "num_classes": 1},
        ValueError,
        ["num_classes", "at least 2"],
    ),
    (
        probability_loyalty,
        {"predictions": [[0.1, float("nan")]], "references": [[0.0, 1.0]]},
        ValueError,
        ["predictions", "NaN"],
    ),
    (
        probability_loyalty,
        {"predictions": [[0.1, 0.2]], "references": [[0.0, float("inf")]]},
        ValueError,
        ["references", "infinity"],
    ),
    (
        probability_loyalty,
        {"predictions": [[1.2, -0.2]], "references": [[0.5, 0.5]], "input_type": "probabilities"},
        ValueError,
        ["predictions", "negative"],
    ),
    (
        probability_loyalty,
        {"predictions": [[0.5, 0.5]], "references": [[0.5, 0.6]], "input_type": "probabilities"},
        ValueError,
        ["references", "sum to 1", "0.0001"],
    ),
    (
        label_loyalty,
        {"predictions": [0, 3], "references": [0, 1], "num_classes": 3},
        ValueError,
        ["predictions", "out of range", "3 classes"],
    ),
    (
        label_loyalty,
        {"predictions": [0, 2], "references": [[0.1, 0.2], [0.3, 0.1]]},
        ValueError,
        ["predictions", "out of range"],
    ),
    (
        label_loyalty,
        {"predictions": [0, -1], "references": [0, 1]},
        ValueError,
        ["predictions", "negative"],
    ),
    (
        label_loyalty,
        {"predictions": [0, 1.5], "references": [0, 1]},
        ValueError,
        ["predictions", "integer"],
    ),
    (
        label_loyalty,
        {"predictions": ["a", "b"], "references": [0, 1]},
        TypeError,
        ["predictions", "integer"],
    ),
    (
        label_loyalty,
        {"predictions": [True, False], "references": [0, 1]},
        TypeError,
        ["predictions", "integer"],
    ),
    (
        flip_rates,
        {"predictions": [0, 1], "references": [0, 1], "labels": [0, 1, 1]},
        ValueError,
        ["labels", "expected 2", "got 3"],
    ),
    (
        flip_rates,
        {"predictions": [0, 1], "references": [0, 1], "labels": [0, 5]},
        ValueError,
        ["labels", "out of range"],
    ),
    (
        probability_loyalty,
        {"predictions": [[0.1, 0.2]], "references": [[0.1, 0.2]], "base": 1},
        ValueError,
        ["base", "greater than 1"],
    ),
    (
        probability_loyalty,
        {"predictions": [[0.1, 0.2]], "references": [[0.1, 0.2]], "base": 0.5},
        ValueError,
        ["base"],
    ),
    (
        probability_loyalty,
        {"predictions": [[0.1, 0.2]], "references": [[0.1, 0.2]], "base": "two"},
        TypeError,
        ["base"],
    ),
    (loyalty, {"predictions": [0, 1], "references": [0, 1], "base": -3}, ValueError, ["base"]),
    (
        probability_loyalty,
        {"predictions": [[0.1, 0.2]], "references": [[0.1, 0.2]], "input_type": "softmax"},
        ValueError,
        ["input_type", "logits"],
    ),
    (
        probability_loyalty,
        {"predictions": [0, 1], "references": [0, 1]},
        ValueError,
        ["predictions", "2-D"],
    ),
    (
        loyalty,
        {"predictions": [0, 1], "references": [0, 1], "confidence_level": 95},
        ValueError,
        ["confidence_level"],
    ),
    (
        probability_loyalty,
        {"predictions": None, "references": [[0.1, 0.2]]},
        TypeError,
        ["predictions"],
    ),
]


@pytest.mark.parametrize(("function", "kwargs", "error", "words"), BAD_INPUTS)
def test_bad_input_raises_a_clear_error(function, kwargs, error, words):
    with pytest.raises(error) as caught:
        function(**kwargs)
    message = str(caught.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("rows", [1, 5])
def test_callers_arrays_are_never_modified(order, rows):
    student = np.asarray(random_logits((rows, 3), 15), order=order)
    teacher = np.asarray(random_logits((rows, 3), 16), order=order)
    saved = student.copy(), teacher.copy()
    loyalty(student, teacher)
    kl_divergence(student, teacher)
    np.testing.assert_array_equal(student, saved[0])
    np.testing.assert_array_equal(teacher, saved[1])


def test_several_chunks_match_scipy():
    # More examples than one chunk of the implementation, with a ragged last chunk.
    student, teacher = random_logits((40_005, 3), 17), random_logits((40_005, 3), 18)
    result = loyalty(student, teacher)
    expected = reference_probability_loyalty(softmax(student, 1), softmax(teacher, 1))
    assert result["probability_loyalty"] == pytest.approx(expected, rel=1e-12)
    kl = rel_entr(softmax(teacher, 1), softmax(student, 1)).sum(1).mean()
    assert result["kl_divergence"] == pytest.approx(kl, rel=1e-9)
