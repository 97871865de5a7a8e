"""The input schema shared by the ``evaluate`` modules: scores (2-D) or class labels (1-D)."""

from __future__ import annotations

import datasets


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
