"""Local lm-evaluation-harness tasks over ``../shared/data``, for the tests and the benchmarks.

A task is a JSON-lines file of documents and a YAML file naming it (``--include_path`` folder): no
dataset hub. ARC questions come from the shared CSV files (question, options..., answer key).

Example:
    >>> # from lm_eval_tasks import ARC_DIR, multiple_choice_yaml, read_arc
    >>> # rows = read_arc(ARC_DIR / "ARC-E" / "test" / "arc_easy_test.csv", 16)
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

ARC_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "arc"

_MC_TEMPLATE = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{text}"
doc_to_choice: "{choices}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def read_arc(path: Path, count: int) -> list[dict[str, Any]]:
    """The first ``count`` usable questions of an ARC CSV file as ``question, choices, label``.

    Rows with an empty option, or answering an option dropped from the file (3 rows answer "E"),
    are skipped: ``acc_norm`` then covers every document.
    """
    rows: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for question, *options, answer in csv.reader(handle):
            keys = "ABCD" if answer in "ABCD" else "1234"
            if answer in keys and all(options):
                rows.append({"question": question, "choices": options, "label": keys.index(answer)})
            if len(rows) == count:
                break
    return rows


def multiple_choice_yaml(task: str, data: Path, text: str, choices: str) -> str:
    """A multiple-choice task (``acc`` and ``acc_norm``) over the JSON-lines file ``data``;
    ``text`` and ``choices`` are lm-eval's Jinja templates, the target is the ``label`` field."""
    return _MC_TEMPLATE.format(task=task, data=data, text=text, choices=choices)
