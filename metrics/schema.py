"""What the three ``evaluate`` modules share: their input schema, citation and ``MetricInfo``."""

from __future__ import annotations

from typing import Any

import datasets
import evaluate

from loyalkit.citation import PAPER_URL, XU_2021_CITATION

__all__ = ["PAPER_URL", "XU_2021_CITATION", "label_features", "metric_info", "score_features"]


def metric_info(
    description: str, inputs_description: str, features: Any, citation: str = XU_2021_CITATION
) -> evaluate.MetricInfo:
    """A ``MetricInfo`` whose columns reach ``_compute`` as Arrow arrays (no copy, no lists).

    ``evaluate`` only accepts a format for scalar features at construction, so it is set after;
    ``loyalkit.metrics.arrow_io.ArrowBatches`` writes the batches that this format reads back.
    """
    info = evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description=inputs_description,
        features=features,
        reference_urls=[PAPER_URL],
    )
    info.format = "arrow"
    return info


def score_features() -> datasets.Features:
    """One row of logits or probabilities per example, for the student and the teacher."""
    row = datasets.Sequence(datasets.Value("float64"))
    return datasets.Features({"predictions": row, "references": row})


def label_features() -> datasets.Features:
    """One class index per example, for the student and the teacher.

    Stored as float64, not int64: Arrow would truncate a label of 0.5 to 0 on the way in, and
    ``loyalkit.metrics`` then could not reject it. Whole numbers are exact in float64 to 2**53.
    """
    label = datasets.Value("float64")
    return datasets.Features({"predictions": label, "references": label})
