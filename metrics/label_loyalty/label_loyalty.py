"""Label loyalty: how often a compressed model predicts its original model's label."""

import evaluate

from loyalkit.metrics import label_loyalty
from loyalkit.metrics.arrow_io import ArrowBatches
from loyalkit.metrics.inputs import check_base, check_input_type
from loyalkit.metrics.schema import XU_2021_CITATION, label_features, metric_info, score_features

_DESCRIPTION = """
Label loyalty (Xu et al., 2021) is the share of examples on which a compressed model (the student,
`predictions`) predicts the same label as the model it was compressed from (the teacher,
`references`): the student's accuracy measured against the teacher's predictions. The teacher scores
1.0 against itself by construction.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`, or `list` of `list` of `float`): the student's predicted labels, or
        its logits or probabilities of shape (examples, classes) (argmax taken).
    references (same form as `predictions`): the teacher's outputs.
    num_classes (`int`, optional): the number of classes, to check that labels are in range.
    input_type, base, labels: accepted (and checked) so that `evaluate.combine` can pass the
        arguments of `probability_loyalty` and `loyalty` to all modules; label loyalty does not use them.
Returns:
    label_loyalty (`float`): share of examples with the teacher's label, in [0, 1].
Examples:
    >>> import evaluate
    >>> label_loyalty = evaluate.load("label_loyalty")
    >>> label_loyalty.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2])
    {'label_loyalty': 0.75}
    >>> label_loyalty.compute(predictions=[[0.2, 1.3], [2.0, -1.0]], references=[[0.1, 0.9], [0.4, 0.5]])
    {'label_loyalty': 0.5}
"""

_CITATION = XU_2021_CITATION


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LabelLoyalty(ArrowBatches, evaluate.Metric):
    def _info(self):
        return metric_info(
            _DESCRIPTION, _KWARGS_DESCRIPTION, [label_features(), score_features()], _CITATION
        )

    def _compute(
        self, predictions, references, num_classes=None, input_type="logits", base=None, labels=None
    ):
        check_input_type(input_type)
        check_base(base)
        return {"label_loyalty": label_loyalty(predictions, references, num_classes=num_classes)}
