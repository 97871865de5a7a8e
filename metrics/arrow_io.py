"""Hand array batches to ``evaluate``'s Arrow cache without a detour through Python lists.

``evaluate.Metric.add_batch`` runs every batch through ``datasets``' ``cast_to_python_objects``:
a million rows of three logits become three million Python floats, seconds of work, and reading them
back as lists costs as much again. The loyalty modules write NumPy (and torch) batches straight to the
same Arrow cache files, in the same schema, and read the columns back as Arrow arrays, so distributed
evaluation (``num_process``/``process_id``) works unchanged and only the conversions disappear.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from loyalkit.metrics.inputs import check_same_length, to_numpy


def _as_array(values: Any, name: str) -> np.ndarray | None:
    """The batch column as a numeric array, or None where evaluate's own path should handle it."""
    if isinstance(values, np.ndarray) or hasattr(values, "detach"):
        array = to_numpy(values, name)
        if array.dtype.kind in "iuf" and array.ndim in (1, 2):
            return array
    return None


def _arrow_column(array: np.ndarray) -> pa.Array:
    if array.ndim == 1:
        return pa.array(array.astype(np.float64, copy=False))
    rows, width = array.shape
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
    values = pa.array(np.ascontiguousarray(array, dtype=np.float64).ravel())
    return pa.ListArray.from_arrays(offsets, values)


class ArrowBatches:
    """Mixin for an ``evaluate.Metric`` with ``predictions`` and ``references`` columns only.

    Batches of NumPy arrays or torch tensors are written directly; anything else (lists, a mix of
    forms, extra columns) goes through ``evaluate``'s own ``add_batch`` unchanged.
    """

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
        """Add a batch of student outputs (``predictions``) and teacher outputs (``references``)."""
        base: Any = super()
        student = _as_array(predictions, "predictions")
        teacher = _as_array(references, "references")
        if kwargs or student is None or teacher is None or student.ndim != teacher.ndim:
            return base.add_batch(predictions=predictions, references=references, **kwargs)
        check_same_length(student, teacher, ("predictions", "references"))
        table = pa.table(
            {"predictions": _arrow_column(student), "references": _arrow_column(teacher)}
        )
        metric: Any = self
        if metric.writer is None:
            metric.selected_feature_format = metric._infer_feature_from_batch(
                {"predictions": student[:1].tolist(), "references": teacher[:1].tolist()}
            )
            metric._init_writer()
        expected = metric.selected_feature_format.arrow_schema
        if not table.schema.equals(expected):
            raise ValueError(
                "`predictions` and `references` must keep one form across batches: this batch is "
                f"{table.schema.types}, earlier ones were {expected.types}"
            )
        # One record batch per call: the writer's default of 1,000 rows per batch makes a million
        # examples a thousand small writes, a third of compute()'s time.
        metric.writer.write_table(table, writer_batch_size=max(1, len(table)))
        return None
