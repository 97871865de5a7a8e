"""Loyalty metrics: the functional API and the ``evaluate`` modules beside it.

The folders ``loyalty/``, ``label_loyalty/`` and ``probability_loyalty/`` are ``evaluate`` modules
(and Hub metric Spaces) over the functions exported here.
"""

from loyalkit.metrics.functional import (
    flip_rates,
    kl_divergence,
    label_agreement,
    label_loyalty,
    label_loyalty_per_class,
    loyalty,
    probability_loyalty,
    probability_loyalty_per_example,
)
from loyalkit.metrics.inputs import PROBABILITY_SUM_TOLERANCE
from loyalkit.metrics.modules import METRIC_NAMES, module_path

__all__ = [
    "METRIC_NAMES",
    "PROBABILITY_SUM_TOLERANCE",
    "flip_rates",
    "kl_divergence",
    "label_agreement",
    "label_loyalty",
    "label_loyalty_per_class",
    "loyalty",
    "probability_loyalty",
    "probability_loyalty_per_example",
    "module_path",
]
