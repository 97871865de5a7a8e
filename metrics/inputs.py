"""Turn what users pass (lists, NumPy arrays, torch tensors) into checked NumPy arrays.

Every check raises ``ValueError`` or ``TypeError`` naming the argument and what was expected, so that a
wrong input never reaches the math as a NumPy traceback or a silently wrong number.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

InputType = Literal["logits", "probabilities"]
INPUT_TYPES: tuple[str, ...] = ("logits", "probabilities")

#: Largest allowed deviation of a probability row's sum from 1. Rows within it are renormalised, as
#: ``scipy.spatial.distance.jensenshannon`` does, so float32 softmax outputs pass unchanged.
PROBABILITY_SUM_TOLERANCE = 1e-4

#: Largest class count inferred from labels when ``num_classes`` is not given (2**20, above every
#: tokenizer vocabulary in use). A larger label is almost always a mistake (an id, a hash, a
#: count): it would make the per-class tables allocate memory in proportion to its value.
MAX_INFERRED_CLASSES = 2**20

_ROLES = {
    "predictions": "the student's outputs",
    "references": "the teacher's outputs",
    "labels": "the gold labels",
}


def _describe(name: str) -> str:
    role = _ROLES.get(name)
    return f"`{name}` ({role})" if role else f"`{name}`"


def to_numpy(values: Any, name: str) -> np.ndarray:
    """Convert ``values`` to a NumPy array, detecting ragged rows instead of making an object array."""
    if values is None:
        raise TypeError(f"{_describe(name)} is required, got None")
    if isinstance(values, (str, bytes, bytearray, memoryview)):
        kind = "a string" if isinstance(values, str) else f"{type(values).__name__} (raw bytes)"
        raise TypeError(f"{_describe(name)} must be a sequence of numbers, got {kind}")
    if type(values).__module__.startswith("pyarrow"):
        return _check_has_examples(_arrow_to_numpy(values, name), name)
    if hasattr(values, "detach"):  # torch.Tensor: leave autograd and the device behind
        tensor = values.detach().cpu()
        values = (tensor.double() if tensor.is_floating_point() else tensor).numpy()
    if isinstance(values, np.ndarray) and values.dtype != object:
        return _check_has_examples(values, name)
    if not hasattr(values, "__iter__") or isinstance(values, Mapping):
        raise TypeError(
            f"{_describe(name)} must be a sequence with one entry per example, "
            f"got {type(values).__name__} {values!r:.40}"
        )
    rows = list(values)
    lengths = {_row_length(row) for row in rows}
    if len(lengths) > 1:
        shown = sorted(length for length in lengths if length is not None)
        raise ValueError(
            f"{_describe(name)} has ragged rows: every row must have the same number of classes, "
            f"got rows of lengths {shown}" + (" mixed with scalars" if None in lengths else "")
        )
    try:
        array = np.asarray(rows if lengths != {None} else values)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{_describe(name)} must be numbers, could not convert: {error}") from None
    if array.dtype == object:
        raise TypeError(f"{_describe(name)} must be numbers, got values of mixed or unknown types")
    return _check_has_examples(array, name)


def _arrow_to_numpy(values: Any, name: str) -> np.ndarray:
    """A column from evaluate's Arrow cache as an array: list columns become (N, C) without copies."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if values.null_count:
        raise ValueError(f"{_describe(name)} has {values.null_count} missing values")
    if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
        return np.asarray(values.to_numpy(zero_copy_only=False))
    lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
    if len(lengths) and lengths.min() != lengths.max():
        raise ValueError(
            f"{_describe(name)} has ragged rows: every row must have the same number of classes, "
            f"got rows of lengths {np.unique(lengths).tolist()}"
        )
    width = int(lengths[0]) if len(lengths) else 0
    flat = values.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat).reshape(len(values), width)


def _check_has_examples(array: np.ndarray, name: str) -> np.ndarray:
    if array.ndim == 0:
        raise TypeError(f"{_describe(name)} must be a sequence with one entry per example")
    if array.shape[0] == 0:
        raise ValueError(f"{_describe(name)} is empty: at least one example is needed")
    return array


def _row_length(row: Any) -> int | None:
    if isinstance(row, (str, bytes, bytearray)):
        return None
    if isinstance(row, np.ndarray):
        return None if row.ndim == 0 else len(row)
    if isinstance(row, Sequence) or hasattr(row, "__len__"):
        return len(row)
    return None


def check_same_length(first: np.ndarray, second: np.ndarray, names: tuple[str, str]) -> None:
    if first.shape[0] != second.shape[0]:
        raise ValueError(
            f"{_describe(names[0])} and {_describe(names[1])} must have one entry per example, "
            f"got {first.shape[0]} and {second.shape[0]}"
        )


def check_input_type(input_type: Any) -> InputType:
    if input_type not in INPUT_TYPES:
        raise ValueError(
            f"`input_type` must be one of {INPUT_TYPES} (what the 2-D scores are), got {input_type!r}"
        )
    return input_type


def check_base(base: Any) -> float:
    """Return the logarithm base as a float; ``None`` means the natural logarithm."""
    if base is None:
        return math.e
    if isinstance(base, bool) or not isinstance(base, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"`base` must be a number greater than 1 or None (natural log), got {base!r}"
        )
    value = float(base)
    if not math.isfinite(value) or value <= 1:
        raise ValueError(f"`base` must be a finite number greater than 1 or None, got {base!r}")
    return value


def check_num_classes(num_classes: Any) -> int | None:
    if num_classes is None:
        return None
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise TypeError(f"`num_classes` must be an integer >= 2 or None, got {num_classes!r}")
    if num_classes < 2:
        raise ValueError(
            f"`num_classes` must be at least 2 (loyalty needs a choice between classes), "
            f"got {num_classes}"
        )
    return int(num_classes)


def as_scores(values: Any, name: str, input_type: InputType) -> np.ndarray:
    """Checked (N, C) float64 scores: logits, or probabilities whose rows sum to 1."""
    array = to_numpy(values, name)
    if array.ndim != 2:
        raise ValueError(
            f"{_describe(name)} must be 2-D scores of shape (examples, classes) "
            f"({input_type}), got an array of shape {array.shape}"
        )
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{_describe(name)} must hold numbers, got dtype {array.dtype}")
    if array.shape[1] < 2:
        raise ValueError(
            f"{_describe(name)} has {array.shape[1]} class: at least 2 classes are needed"
        )
    array = array.astype(np.float64, copy=False)
    if not np.isfinite(array).all():
        bad = int(np.flatnonzero(~np.isfinite(array).all(axis=1))[0])
        raise ValueError(f"{_describe(name)} contains NaN or infinity (first at example {bad})")
    if input_type == "probabilities":
        if (array < 0).any():
            bad = int(np.flatnonzero((array < 0).any(axis=1))[0])
            raise ValueError(
                f"{_describe(name)} contains negative probabilities (first at example {bad}); "
                "pass input_type='logits' if these are logits"
            )
        sums = array.sum(axis=1)
        off = np.abs(sums - 1.0) > PROBABILITY_SUM_TOLERANCE
        if off.any():
            bad = int(np.flatnonzero(off)[0])
            raise ValueError(
                f"{_describe(name)} has rows that do not sum to 1 within "
                f"{PROBABILITY_SUM_TOLERANCE:g} (example {bad} sums to {sums[bad]:.6g}); "
                "pass input_type='logits' if these are logits"
            )
        array = array / sums[:, None]
    return array


def check_inferable(labels: np.ndarray, name: str) -> None:
    """Refuse to infer a class count above ``MAX_INFERRED_CLASSES`` from ``labels``."""
    if labels.size and labels.max() >= MAX_INFERRED_CLASSES:
        bad = int(np.argmax(labels))
        raise ValueError(
            f"{_describe(name)} has label {labels[bad]} at example {bad}: inferring the class "
            f"count is limited to labels below {MAX_INFERRED_CLASSES:,}; pass `num_classes` if "
            "that many classes are meant"
        )


def check_outputs(values: Any, name: str) -> np.ndarray:
    """``values`` as an array after the checks every metric makes before any math.

    1-D class labels (integers, or whole floats, >= 0) or 2-D finite scores with at least 2
    classes; bools, strings, bytes, empty and scalar inputs are refused naming ``name``. The
    ``evaluate`` modules run this on every batch, so they accept exactly what the functions accept.
    """
    array = to_numpy(values, name)
    if array.ndim == 2:
        as_scores(array, name, "logits")
    else:
        as_labels(array, name, None)
    return array


def as_labels(values: Any, name: str, num_classes: int | None) -> np.ndarray:
    """Checked 1-D int64 class indices in ``[0, num_classes)``; 2-D scores become their argmax."""
    array = to_numpy(values, name)
    if array.ndim == 2:
        scores = as_scores(array, name, "logits")
        if num_classes is not None and scores.shape[1] != num_classes:
            raise ValueError(
                f"{_describe(name)} has {scores.shape[1]} classes, expected {num_classes}"
            )
        return scores.argmax(axis=1)
    if array.ndim != 1:
        raise ValueError(
            f"{_describe(name)} must be 1-D class labels or 2-D scores, got shape {array.shape}"
        )
    if array.dtype.kind == "b" or array.dtype.kind not in "iuf":
        raise TypeError(f"{_describe(name)} must be integer class labels, got dtype {array.dtype}")
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise ValueError(f"{_describe(name)} contains NaN or infinity; expected class labels")
        if (array != np.round(array)).any():
            bad = int(np.flatnonzero(array != np.round(array))[0])
            raise ValueError(
                f"{_describe(name)} must be integer class labels, got {array[bad]!r} "
                f"at example {bad}"
            )
    if array.dtype.kind == "f" and (np.abs(array) >= 2.0**62).any():
        bad = int(np.flatnonzero(np.abs(array) >= 2.0**62)[0])
        raise ValueError(
            f"{_describe(name)} has label {array[bad]!r} at example {bad}, too large for a class label"
        )
    labels = array.astype(np.int64)
    if (labels < 0).any():
        raise ValueError(f"{_describe(name)} has a negative label ({labels.min()}); expected >= 0")
    if num_classes is not None and (labels >= num_classes).any():
        raise ValueError(
            f"{_describe(name)} has label {labels.max()}, out of range for {num_classes} classes "
            f"(expected 0..{num_classes - 1})"
        )
    return labels
