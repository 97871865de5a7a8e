"""Fixtures every test file shares: one CPU thread, and the tiny tokenized sentiment data.

The builders behind them (tiny models, tokenizers, datasets) stay plain functions in the helper
modules (``tiny_bert.py``, ``trainer_helpers.py``...), so worker scripts can call them too.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _one_thread_for_the_session() -> None:
    # The cores are shared: module-scoped fixtures (which train models) run before any
    # function-scoped fixture, so the pin must already hold when they start.
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # A test (or the study it runs with ``threads=N``) may change the count: each test starts at one.
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """``(tokenizer, dataset)`` of :func:`trainer_helpers.sentiment_data`: 48 tokenized examples."""
    from trainer_helpers import (
        sentiment_data,  # imports the Trainer: only for the files that need it
    )

    return sentiment_data(tmp_path_factory.mktemp("tokenizer"))
