"""JSON-lines parsing with errors that name the file and the line (lm-eval samples, corpora)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any


def json_lines(text: str, source: str) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for every non-blank line of ``text``, counted from 1.

    ``source`` names the text in the error a line that is not JSON raises (a path, an argument).

    >>> list(json_lines('{"a": 1}\\n\\n[2]', "demo.jsonl"))
    [(1, {'a': 1}), (3, [2])]
    >>> list(json_lines("{oops", "demo.jsonl"))
    Traceback (most recent call last):
    ...
    ValueError: demo.jsonl line 1 is not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)
    """
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{source} line {number} is not JSON: {error}") from None
        yield number, value
