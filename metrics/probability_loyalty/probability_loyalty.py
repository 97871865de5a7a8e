"""Probability loyalty: how close a compressed model's output distribution is to its original's."""

import evaluate

from loyalkit.metrics import probability_loyalty
from loyalkit.metrics.arrow_io import ArrowBatches
from loyalkit.metrics.schema import XU_2021_CITATION, metric_info, score_features

_DESCRIPTION = """
Probability loyalty (Xu et al., 2021) is the mean over examples of 1 - sqrt(JSD(p_teacher ||
p_student)): one minus the Jensen-Shannon distance between the output distribution of the original
model (the teacher, `references`) and that of its compressed version (the student, `predictions`).
It sees what label loyalty misses: a student can keep every label while its confidence drifts.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`): the student's logits or probabilities, shape
        (examples, classes).
    references (`list` of `list` of `float`): the teacher's, same shape.
    input_type (`str`, default "logits"): "logits" (softmax applied) or "probabilities" (rows must be
        non-negative and sum to 1 within 1e-4).
    base (`float`, optional): logarithm base of the divergence. None (natural log, the authors'
        reference computation with scipy) gives a range of [1 - sqrt(ln 2), 1], about [0.167, 1];
        base=2 gives [0, 1].
    num_classes, labels: accepted so that `evaluate.combine` can pass the arguments of
        `label_loyalty` and `loyalty` to all modules; `num_classes` is checked against the scores.
Returns:
    probability_loyalty (`float`): 1.0 when the distributions are identical.
Examples:
    >>> import evaluate
    >>> probability_loyalty = evaluate.load("probability_loyalty")
    >>> result = probability_loyalty.compute(
    ...     predictions=[[0.9, 0.1], [0.5, 0.5]], references=[[0.6, 0.4], [0.5, 0.5]],
    ...     input_type="probabilities")
    >>> round(result["probability_loyalty"], 4)
    0.8742
    >>> result = probability_loyalty.compute(
    ...     predictions=[[1.0, 0.0]], references=[[0.0, 1.0]], input_type="probabilities", base=2)
    >>> result["probability_loyalty"]
    0.0
"""

_CITATION = XU_2021_CITATION


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ProbabilityLoyalty(ArrowBatches, evaluate.Metric):
    def _info(self):
        return metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, score_features(), _CITATION)

    def _compute(
        self, predictions, references, input_type="logits", base=None, num_classes=None, labels=None
    ):
        value = probability_loyalty(
            predictions, references, input_type=input_type, base=base, num_classes=num_classes
        )
        return {"probability_loyalty": value}
