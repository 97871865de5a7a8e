"""Loyalty of a compressed model to its original: label and probability loyalty, KL, flips."""

import evaluate

from loyalkit.metrics import loyalty as loyalty_report
from loyalkit.metrics.arrow_io import ArrowBatches
from loyalkit.metrics.schema import XU_2021_CITATION, label_features, metric_info, score_features

_DESCRIPTION = """
How faithful a compressed model (the student) is to the model it was compressed from (the teacher),
beyond accuracy (Xu et al., 2021). `predictions` are the student's outputs, `references` the
teacher's. Returns label loyalty (share of examples where the student predicts the teacher's label),
probability loyalty (mean of 1 - sqrt(JSD(p_teacher || p_student))), the mean KL(teacher || student),
label loyalty per teacher class and its worst class, and, when gold labels are passed, the flips of
Dutta et al. (2024): examples that go correct -> incorrect or incorrect -> correct.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `float`, or `list` of `int`): the student's logits or
        probabilities, shape (examples, classes), or its predicted class labels.
    references (same form as `predictions`): the teacher's outputs.
    labels (`list` of `int`, optional): gold labels; adds flips and both models' accuracy.
    input_type (`str`, default "logits"): "logits" (softmax applied) or "probabilities" (rows must be
        non-negative and sum to 1 within 1e-4).
    base (`float`, optional): logarithm base for the divergences; None is the natural log, giving
        probability loyalty in [0.167, 1]; 2 gives [0, 1].
    num_classes (`int`, optional): the number of classes, to check labels when no scores are given.
    confidence_level (`float`, optional): e.g. 0.95 adds bootstrap intervals (scipy.stats.bootstrap).
    n_resamples (`int`, default 1000), bootstrap_method (`str`, default "percentile"),
        seed (`int`, optional): bootstrap settings.
    return_disagreements (`bool`, default False): add the indices where the labels differ.
    level (`str`, default "example"): "token" reads each row as one position of a causal LM
        (logits over the vocabulary, natural log) and `labels` as the reference next tokens, and
        returns the token-level report of `loyalkit compare lm` instead: label_loyalty (same top-1
        token), probability_loyalty, kl_divergence (mean, stderr, percentiles), delta_p (mean,
        rms) and ppl_ratio (these two need `labels`), num_tokens.
Returns:
    label_loyalty (`float`): in [0, 1].
    probability_loyalty (`float`): in [1 - sqrt(log_base 2), 1]; scores only.
    kl_divergence (`float`): mean KL(teacher || student) in units of log(base); scores only.
    label_loyalty_per_class (`dict`), worst_class_label_loyalty (`float`): per teacher class.
    flips, flips_correct_to_incorrect, flips_incorrect_to_correct, student_accuracy,
        teacher_accuracy (`float`): with `labels` only.
    *_ci (`tuple`): bootstrap intervals, with `confidence_level` only.
    disagreements (`list` of `int`): with `return_disagreements` only.
    num_examples (`int`).
Examples:
    >>> import evaluate
    >>> loyalty = evaluate.load("loyalty")
    >>> result = loyalty.compute(
    ...     predictions=[[2.0, 0.5], [0.2, 1.0], [1.5, 1.4], [0.1, 0.3]],
    ...     references=[[3.0, 0.1], [0.1, 2.0], [0.1, 0.9], [0.4, 0.2]],
    ...     labels=[0, 1, 1, 1], return_disagreements=True)
    >>> print(round(result["label_loyalty"], 4), round(result["probability_loyalty"], 4))
    0.5 0.8681
    >>> print(result["flips_correct_to_incorrect"], result["disagreements"])
    0.25 [2, 3]
"""

_CITATION = (
    XU_2021_CITATION
    + """@article{dutta2024accuracy,
    title = "Accuracy is Not All You Need",
    author = "Dutta, Abhinav and Krishnan, Sanjeev and Kwatra, Nipun and Ramjee, Ramachandran",
    journal = "arXiv preprint arXiv:2407.09141",
    year = "2024",
}
"""
)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Loyalty(ArrowBatches, evaluate.Metric):
    def _info(self):
        return metric_info(
            _DESCRIPTION, _KWARGS_DESCRIPTION, [score_features(), label_features()], _CITATION
        )

    def _compute(self, predictions, references, level="example", **kwargs):
        if level == "token":
            # Imported here: the token-level math needs torch, the classifier metrics do not.
            from loyalkit.metrics.token_loyalty import token_loyalty

            return token_loyalty(predictions, references, **kwargs)
        if level != "example":
            raise ValueError(f'`level` must be "example" or "token", got {level!r}')
        return loyalty_report(predictions, references, **kwargs)
