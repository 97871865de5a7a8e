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

from loyalkit.metrics.functional import check_pair


def _arrow_column(array: np.ndarray) -> pa.Array:
    if array.ndim == 1:
        return pa.array(array.astype(np.float64, copy=False))
    rows, width = array.shape
    offsets = pa.array(np.arange(0, rows * width + 1, width, dtype=np.int32))
    values = pa.array(np.ascontiguousarray(array, dtype=np.float64).ravel())
    return pa.ListArray.from_arrays(offsets, values)


class ArrowBatches:
    """Mixin for an ``evaluate.Metric`` with ``predictions`` and ``references`` columns only.

    Every batch, whatever its form (lists, NumPy arrays, torch tensors), first goes through
    ``loyalkit.metrics.functional.check_pair``, the check every function of the functional API
    starts with, so the modules accept and refuse exactly what the functions do (bools, strings,
    bytes, empty and scalar inputs are refused naming the argument). Checked arrays are written
    to the Arrow cache directly; ``evaluate``'s own ``add_batch`` would cast bools and numeric
    strings to numbers and read bytes as a list of small integers.
    """

    def add(self, *, prediction: Any = None, reference: Any = None, **kwargs: Any) -> None:
        """Add one example: the student's output (``prediction``) and the teacher's."""
        if kwargs:
            raise TypeError(
                f"unexpected arguments {sorted(kwargs)}: expected prediction, reference"
            )
        return self.add_batch(predictions=[prediction], references=[reference])

    def add_batch(self, *, predictions: Any = None, references: Any = None, **kwargs: Any) -> None:
        """Add a batch of student outputs (``predictions``) and teacher outputs (``references``)."""
        if kwargs:
            raise TypeError(
                f"unexpected arguments {sorted(kwargs)}: expected predictions, references"
            )
        student, teacher = check_pair(predictions, references)
        if student.ndim != teacher.ndim:
            raise ValueError(
                "`predictions` and `references` must have the same form: both labels (1-D) or "
                f"both scores (2-D), got {student.ndim}-D and {teacher.ndim}-D"
            )
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
