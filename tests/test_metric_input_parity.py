"""Issue 11, finding 6: the ``evaluate`` modules refuse exactly what the functional API refuses.

Each bad input goes to a function and to its module; both must raise the same exception type with
the same message, and the message must name the argument.
"""

from __future__ import annotations

import tracemalloc

import evaluate
import numpy as np
import pytest
import torch

from loyalkit.metrics import label_loyalty, loyalty, module_path, probability_loyalty

MAX_INFERRED_CLASSES = 2**20  # the stated limit (loyalkit.metrics.inputs.MAX_INFERRED_CLASSES)

FUNCTIONS = {
    "label_loyalty": label_loyalty,
    "probability_loyalty": probability_loyalty,
    "loyalty": loyalty,
}

GOOD_LABELS = [0, 1]
GOOD_SCORES = [[0.2, 0.8], [0.6, 0.4]]

BAD = {
    "bool list": [True, False],
    "bool array": np.array([True, False]),
    "bool tensor": torch.tensor([True, False]),
    "bool scores": np.array([[True, False], [False, True]]),
    "numeric strings": ["1", "0"],
    "numeric string scores": [["0.2", "0.8"], ["0.6", "0.4"]],
    "bytes": b"\x00\x01",
    "bytearray": bytearray(b"\x00\x01"),
    "string": "01",
    "empty list": [],
    "empty array": np.zeros((0, 2)),
    "int scalar": 1,
    "float scalar": 1.0,
    "0-d array": np.array(1),
    "mapping": {0: 1, 1: 0},
    "3-D": np.zeros((2, 2, 2)),
}


@pytest.fixture(scope="module")
def modules() -> dict[str, evaluate.EvaluationModule]:
    return {name: evaluate.load(str(module_path(name))) for name in FUNCTIONS}


def _raised(call):
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return type(info.value), str(info.value)


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@pytest.mark.parametrize("case", sorted(BAD))
@pytest.mark.parametrize("argument", ["predictions", "references"])
def test_module_refuses_what_the_function_refuses(modules, name, case, argument):
    good = GOOD_SCORES if name == "probability_loyalty" else GOOD_LABELS
    kwargs = {"predictions": good, "references": good, argument: BAD[case]}
    function_error = _raised(lambda: FUNCTIONS[name](**kwargs))
    module_error = _raised(lambda: modules[name].compute(**kwargs))
    assert module_error == function_error
    assert f"`{argument}`" in function_error[1]
    batch_error = _raised(lambda: modules[name].add_batch(**kwargs))
    assert batch_error == function_error
    # A refused batch leaves nothing behind: the next compute sees only its own inputs.
    assert (
        modules[name].compute(predictions=good, references=good)[
            "label_loyalty" if name != "probability_loyalty" else "probability_loyalty"
        ]
        == 1.0
    )


def test_bytes_were_the_reported_case(modules):
    # The exact call from the issue returned 1.0.
    with pytest.raises(TypeError, match="`predictions`.*bytes"):
        modules["label_loyalty"].compute(predictions=b"\x00\x01", references=b"\x00\x01")


def test_single_examples_through_add(modules):
    module = modules["label_loyalty"]
    with pytest.raises(TypeError, match="`predictions`.*bool"):
        module.add(prediction=True, reference=1)
    module.add(prediction=1, reference=1)
    module.add(prediction=0, reference=1)
    assert module.compute() == {"label_loyalty": 0.5}


def test_inferred_class_count_is_bounded_and_names_the_label(modules):
    student = [0, 1, 10**9, 1]
    teacher = [0, 1, 1, 1]
    tracemalloc.start()
    for call in (
        lambda: loyalty(student, teacher),
        lambda: modules["loyalty"].compute(predictions=student, references=teacher),
    ):
        with pytest.raises(
            ValueError,
            match=r"`predictions`.*label 1000000000 at example 2.*"
            r"1,048,576.*num_classes",
        ):
            call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 50 * 2**20  # the reported case allocated 7.45 GiB


def test_labels_just_below_the_bound_and_explicit_class_counts_stay_cheap():
    # Per-class loyalty by hand: class 0 kept 1 of 1, class L-1 kept 1 of 2.
    big = MAX_INFERRED_CLASSES - 1
    assert loyalty([0, big, 0], [0, big, big])["label_loyalty_per_class"] == {0: 1.0, big: 0.5}
    tracemalloc.start()
    result = loyalty([3, 10**9], [3, 10**9 - 1], num_classes=10**9 + 1)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result["label_loyalty_per_class"] == {3: 1.0, 10**9 - 1: 0.0}
    assert peak < 50 * 2**20
