"""Loyalty of a compressed model (the student) to its original (the teacher): the one implementation.

``predictions`` are always the student's outputs and ``references`` the teacher's, as in the
``evaluate`` modules that wrap these functions. Scores are 2-D ``(examples, classes)`` arrays of
logits or probabilities (say which with ``input_type``); labels are 1-D class indices.

Label loyalty (Xu et al. 2021) is the share of examples on which the student predicts the teacher's
label. Probability loyalty is the mean over examples of ``1 - sqrt(JSD(p_teacher || p_student))``,
the Jensen-Shannon distance as ``scipy.spatial.distance.jensenshannon`` computes it.

Example:
    >>> from loyalkit.metrics import label_loyalty, probability_loyalty
    >>> teacher = [[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]]
    >>> student = [[1.0, 0.0], [0.5, 0.0], [3.0, 0.0]]
    >>> round(label_loyalty(student, teacher), 4)
    0.6667
    >>> round(probability_loyalty(student, teacher, input_type="logits"), 4)
    0.7955
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from loyalkit.metrics.confidence import bootstrap_interval
from loyalkit.metrics.inputs import (
    InputType,
    as_labels,
    as_scores,
    check_base,
    check_inferable,
    check_input_type,
    check_num_classes,
    check_outputs,
    check_same_length,
    to_numpy,
)

__all__ = [
    "check_pair",
    "flip_rates",
    "kl_divergence",
    "label_agreement",
    "label_loyalty",
    "label_loyalty_per_class",
    "loyalty",
    "probability_loyalty",
    "probability_loyalty_per_example",
]

_PAIR = ("predictions", "references")


def _as_arrays(predictions: Any, references: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both models' outputs, checked as the ``evaluate`` modules check every batch."""
    return check_pair(predictions, references)


def check_pair(predictions: Any, references: Any) -> tuple[np.ndarray, np.ndarray]:
    """The first check of every function here, and of every batch the ``evaluate`` modules get.

    Example:
        >>> check_pair([True, False], [1, 0])
        Traceback (most recent call last):
        ...
        TypeError: `predictions` (the student's outputs) must be integer class labels, got dtype bool
    """
    student = check_outputs(predictions, "predictions")
    teacher = check_outputs(references, "references")
    check_same_length(student, teacher, _PAIR)
    return student, teacher


def _class_count(student: np.ndarray, teacher: np.ndarray, num_classes: int | None) -> int | None:
    """The number of classes implied by 2-D scores and ``num_classes``, checked for agreement."""
    counts = {
        name: a.shape[1] for name, a in zip(_PAIR, (student, teacher), strict=True) if a.ndim == 2
    }
    if len(set(counts.values())) > 1:
        raise ValueError(
            "`predictions` (the student's outputs) and `references` (the teacher's outputs) must "
            f"have the same number of classes, got {counts['predictions']} and "
            f"{counts['references']}"
        )
    implied = next(iter(counts.values()), None)
    if num_classes is not None and implied is not None and implied != num_classes:
        raise ValueError(f"`num_classes` is {num_classes} but the scores have {implied} classes")
    return num_classes if num_classes is not None else implied


def _paired_labels(
    predictions: Any, references: Any, num_classes: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    predictions, references = _as_arrays(predictions, references)
    num_classes = _class_count(predictions, references, check_num_classes(num_classes))
    student = as_labels(predictions, "predictions", num_classes)
    teacher = as_labels(references, "references", num_classes)
    check_same_length(student, teacher, _PAIR)
    if num_classes is None:
        check_inferable(student, "predictions")
        check_inferable(teacher, "references")
        num_classes = max(2, int(max(student.max(), teacher.max())) + 1)
    return student, teacher, num_classes


class _Distributions(NamedTuple):
    """Probabilities with classes on the FIRST axis, shape (C, N), and for logits their log-softmax.

    NumPy reduces a short last axis row by row, about 20x slower than adding C rows of N values, and
    the class count is usually 2 or 3: keeping classes first makes every sum over classes fast.
    """

    probabilities: np.ndarray
    log_softmax: np.ndarray | None


def _distributions(scores: np.ndarray, input_type: InputType) -> _Distributions:
    # A contiguous copy, always: reductions over a transposed view are as slow as the row-by-row
    # ones, and the caller's array (or a read-only Arrow buffer) must not be changed in place.
    scores = np.array(scores.T, order="C")
    if input_type == "probabilities":
        return _Distributions(scores, None)
    scores -= scores.max(axis=0)
    exponentials = np.exp(scores)
    total = exponentials.sum(axis=0)
    exponentials /= total
    scores -= np.log(total)
    return _Distributions(exponentials, scores)


def _natural_log(distributions: _Distributions) -> np.ndarray:
    """Exact log-probabilities: the log-softmax of logits (finite), or log(p) (-inf where p = 0)."""
    if distributions.log_softmax is not None:
        return distributions.log_softmax
    with np.errstate(divide="ignore"):
        return np.log(distributions.probabilities)


def _paired_scores(
    predictions: Any, references: Any, input_type: Any, num_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray, InputType]:
    input_type = check_input_type(input_type)
    predictions, references = _as_arrays(predictions, references)
    _class_count(predictions, references, check_num_classes(num_classes))
    student = as_scores(predictions, "predictions", input_type)
    teacher = as_scores(references, "references", input_type)
    check_same_length(student, teacher, _PAIR)
    return student, teacher, input_type


# Examples per chunk: the dozen temporaries of a chunk stay in the CPU cache (about 2x faster at
# 10^5 examples than whole-array passes).
_CHUNK = 16384

_PerExample = Callable[[_Distributions, _Distributions, float], np.ndarray]


def _per_example(
    student: np.ndarray,
    teacher: np.ndarray,
    input_type: InputType,
    log_base: float,
    functions: tuple[_PerExample, ...],
) -> list[np.ndarray]:
    """Each function's per-example values, computed chunk by chunk over the examples."""
    results = [np.empty(len(student)) for _ in functions]
    for start in range(0, len(student), _CHUNK):
        stop = start + _CHUNK
        pair = (
            _distributions(student[start:stop], input_type),
            _distributions(teacher[start:stop], input_type),
        )
        for function, result in zip(functions, results, strict=True):
            result[start:stop] = function(*pair, log_base)
    return results


def label_agreement(
    predictions: Any, references: Any, *, num_classes: int | None = None
) -> np.ndarray:
    """Per-example booleans: does the student predict the teacher's label?

    Example:
        >>> label_agreement([0, 1, 2], [0, 2, 2]).tolist()
        [True, False, True]
    """
    student, teacher, _ = _paired_labels(predictions, references, num_classes)
    return np.asarray(student == teacher)


def label_loyalty(predictions: Any, references: Any, *, num_classes: int | None = None) -> float:
    """Share of examples where the student's label equals the teacher's, in [0, 1].

    Labels (1-D) or scores (2-D, argmax taken) for either model.

    Example:
        >>> label_loyalty([0, 1, 1, 0], [0, 1, 0, 0])
        0.75
    """
    return float(label_agreement(predictions, references, num_classes=num_classes).mean())


def probability_loyalty_per_example(
    predictions: Any,
    references: Any,
    *,
    input_type: InputType = "logits",
    base: float | None = None,
    num_classes: int | None = None,
) -> np.ndarray:
    """Per-example ``1 - sqrt(JSD(p_teacher || p_student))``.

    ``base=None`` is the natural logarithm (range [1 - sqrt(ln 2), 1], about [0.167, 1]); ``base=2``
    gives [0, 1].

    Example:
        >>> probability_loyalty_per_example(
        ...     [[0.5, 0.5], [1.0, 0.0]], [[0.5, 0.5], [0.0, 1.0]],
        ...     input_type="probabilities", base=2).tolist()
        [1.0, 0.0]
    """
    log_base = math.log(check_base(base))
    student, teacher, kind = _paired_scores(predictions, references, input_type, num_classes)
    return _per_example(student, teacher, kind, log_base, (_loyalty_per_example,))[0]


# Clamping at the smallest normal double makes p log p exactly 0 for p = 0 without a branch.
_TINY = np.finfo(np.float64).tiny


def _loyalty_per_example(
    student: _Distributions, teacher: _Distributions, log_base: float
) -> np.ndarray:
    p, q = teacher.probabilities, student.probabilities
    middle = p + q
    middle *= 0.5
    # Logs of the probabilities themselves (not the log-softmax): identical rows give m == p bit for
    # bit, so their divergence is exactly 0.
    log_middle = np.log(np.maximum(middle, _TINY))
    divergence = (p * (np.log(np.maximum(p, _TINY)) - log_middle)).sum(axis=0)
    divergence += (q * (np.log(np.maximum(q, _TINY)) - log_middle)).sum(axis=0)
    # Rounding can leave a divergence of -1e-17; the square root needs >= 0.
    distance = np.sqrt(np.maximum(divergence / (2.0 * log_base), 0.0))
    return np.asarray(1.0 - distance)


def probability_loyalty(
    predictions: Any,
    references: Any,
    *,
    input_type: InputType = "logits",
    base: float | None = None,
    num_classes: int | None = None,
) -> float:
    """Mean of ``1 - sqrt(JSD(p_teacher || p_student))`` over examples (Xu et al. 2021).

    Example:
        >>> round(probability_loyalty([[0.9, 0.1]], [[0.6, 0.4]], input_type="probabilities"), 4)
        0.7484
    """
    per_example = probability_loyalty_per_example(
        predictions, references, input_type=input_type, base=base, num_classes=num_classes
    )
    return float(per_example.mean())


def _kl_per_example(
    student: _Distributions, teacher: _Distributions, log_base: float
) -> np.ndarray:
    p = teacher.probabilities
    with np.errstate(invalid="ignore"):
        terms = np.where(p > 0, p * (_natural_log(teacher) - _natural_log(student)), 0.0)
    return np.asarray(terms.sum(axis=0) / log_base)


def kl_divergence(
    predictions: Any,
    references: Any,
    *,
    input_type: InputType = "logits",
    base: float | None = None,
    num_classes: int | None = None,
) -> float:
    """Mean ``KL(p_teacher || p_student)`` over examples, in units of ``log(base)`` (nats by default).

    Infinite when a probability input gives zero student probability to a class the teacher uses.

    Example:
        >>> round(kl_divergence([[0.5, 0.5]], [[0.75, 0.25]], input_type="probabilities", base=2), 4)
        0.1887
    """
    log_base = math.log(check_base(base))
    student, teacher, kind = _paired_scores(predictions, references, input_type, num_classes)
    return float(_per_example(student, teacher, kind, log_base, (_kl_per_example,))[0].mean())


def label_loyalty_per_class(
    predictions: Any, references: Any, *, num_classes: int | None = None
) -> dict[int, float]:
    """Label loyalty on the examples of each class the teacher predicts (absent classes left out).

    Example:
        >>> label_loyalty_per_class([0, 0, 1, 1], [0, 1, 1, 1])
        {0: 1.0, 1: 0.6666666666666666}
    """
    student, teacher, num_classes = _paired_labels(predictions, references, num_classes)
    return _per_class(student, teacher)


def _per_class(student: np.ndarray, teacher: np.ndarray) -> dict[int, float]:
    # Over the classes present only: memory follows the examples, never the largest label.
    classes, index, totals = np.unique(teacher, return_inverse=True, return_counts=True)
    agreed = np.bincount(index, weights=student == teacher, minlength=len(classes))
    return {int(c): float(a / t) for c, a, t in zip(classes, agreed, totals, strict=True)}


def _gold_labels(labels: Any, length: int, num_classes: int) -> np.ndarray:
    gold = as_labels(to_numpy(labels, "labels"), "labels", num_classes)
    if gold.shape[0] != length:
        raise ValueError(
            f"`labels` (the gold labels) must have one label per example: expected {length}, "
            f"got {gold.shape[0]}"
        )
    return gold


def flip_rates(
    predictions: Any, references: Any, labels: Any, *, num_classes: int | None = None
) -> dict[str, float]:
    """Flips (Dutta et al. 2024): examples whose correctness changes from teacher to student.

    Returns the shares of examples that go correct -> incorrect, incorrect -> correct, their sum,
    and both models' accuracy on ``labels``.

    Example:
        >>> flip_rates([1, 0, 1, 1], [1, 1, 0, 1], labels=[1, 1, 1, 0])
        {'flips': 0.5, 'flips_correct_to_incorrect': 0.25, 'flips_incorrect_to_correct': 0.25, \
'student_accuracy': 0.5, 'teacher_accuracy': 0.5}
    """
    student, teacher, num_classes = _paired_labels(predictions, references, num_classes)
    gold = _gold_labels(labels, len(student), num_classes)
    return _flips(student == gold, teacher == gold)


def _flips(student_correct: np.ndarray, teacher_correct: np.ndarray) -> dict[str, float]:
    lost = float((teacher_correct & ~student_correct).mean())
    gained = float((~teacher_correct & student_correct).mean())
    return {
        "flips": lost + gained,
        "flips_correct_to_incorrect": lost,
        "flips_incorrect_to_correct": gained,
        "student_accuracy": float(student_correct.mean()),
        "teacher_accuracy": float(teacher_correct.mean()),
    }


def loyalty(
    predictions: Any,
    references: Any,
    *,
    labels: Any = None,
    input_type: InputType = "logits",
    base: float | None = None,
    num_classes: int | None = None,
    confidence_level: float | None = None,
    n_resamples: int = 1000,
    bootstrap_method: str = "percentile",
    seed: int | None = None,
    return_disagreements: bool = False,
) -> dict[str, Any]:
    """Everything at once: label and probability loyalty, KL, per-class loyalty, flips, intervals.

    Probability loyalty and KL need 2-D scores from both models; with labels only they are left out.
    ``confidence_level`` (e.g. 0.95) adds bootstrap intervals from ``scipy.stats.bootstrap``.

    Example:
        >>> result = loyalty([[1.0, 0.0], [0.0, 2.0], [0.3, 0.1]],
        ...                  [[2.0, 0.0], [0.0, 1.0], [0.0, 0.2]], labels=[0, 1, 1])
        >>> {k: round(v, 4) for k, v in result.items() if isinstance(v, float)}
        {'label_loyalty': 0.6667, 'probability_loyalty': 0.8863, 'kl_divergence': 0.0566, \
'worst_class_label_loyalty': 0.5, 'flips': 0.3333, 'flips_correct_to_incorrect': 0.3333, \
'flips_incorrect_to_correct': 0.0, 'student_accuracy': 0.6667, 'teacher_accuracy': 1.0}
        >>> result["label_loyalty_per_class"]
        {0: 1.0, 1: 0.5}
    """
    predictions, references = _as_arrays(predictions, references)
    student, teacher, num_classes = _paired_labels(predictions, references, num_classes)
    agreement = student == teacher
    result: dict[str, Any] = {"label_loyalty": float(agreement.mean())}
    per_example: dict[str, np.ndarray] = {"label_loyalty": agreement.astype(np.float64)}
    if predictions.ndim == 2 and references.ndim == 2:
        log_base = math.log(check_base(base))
        student_scores, teacher_scores, kind = _paired_scores(predictions, references, input_type)
        loyal, kl = _per_example(
            student_scores, teacher_scores, kind, log_base, (_loyalty_per_example, _kl_per_example)
        )
        result["probability_loyalty"] = float(loyal.mean())
        result["kl_divergence"] = float(kl.mean())
        per_example["probability_loyalty"] = loyal
    else:
        check_base(base)
    per_class = _per_class(student, teacher)
    result["label_loyalty_per_class"] = per_class
    result["worst_class_label_loyalty"] = min(per_class.values())
    if labels is not None:
        gold = _gold_labels(labels, len(student), num_classes)
        result.update(_flips(student == gold, teacher == gold))
        per_example["flips"] = ((student == gold) != (teacher == gold)).astype(np.float64)
    if confidence_level is not None:
        for name, values in per_example.items():
            result[f"{name}_ci"] = bootstrap_interval(
                values,
                confidence_level=confidence_level,
                n_resamples=n_resamples,
                method=bootstrap_method,
                seed=seed,
            )
    if return_disagreements:
        result["disagreements"] = np.flatnonzero(~agreement).tolist()
    result["num_examples"] = int(len(student))
    return result
