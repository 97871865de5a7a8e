"""The packaged sentiment example: counts, balance, labels and split hygiene.

Every expectation is counted here from the TSV files with the ``csv`` module, independently of
the loader, which must then return exactly the same rows.
"""

from __future__ import annotations

import csv
import itertools
import re
from collections import Counter
from pathlib import Path

import pytest

from loyalkit.example_data import (
    load_sentiment_example,
    sentiment_example_dir,
    sentiment_example_files,
)

DATA = Path(__file__).resolve().parents[1] / "loyalkit" / "data" / "sentiment"
EXPECTED_ROWS = {"train": 480, "test": 160}


def read_rows(split: str) -> list[tuple[str, str]]:
    with open(DATA / f"{split}.tsv", encoding="ascii", newline="") as handle:
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader)
        assert header == ["sentence", "label"]
        rows = list(reader)
    assert all(len(row) == 2 for row in rows), [row for row in rows if len(row) != 2]
    return [(row[0], row[1]) for row in rows]


def word_set(sentence: str) -> frozenset[str]:
    return frozenset(re.findall(r"[a-z0-9']+", sentence.lower()))


@pytest.fixture(scope="module")
def rows() -> dict[str, list[tuple[str, str]]]:
    return {split: read_rows(split) for split in EXPECTED_ROWS}


@pytest.fixture(scope="module")
def loaded():
    return load_sentiment_example()


def test_files_have_the_documented_counts_and_exact_balance(rows):
    for split, expected in EXPECTED_ROWS.items():
        assert len(rows[split]) == expected
        half = expected // 2
        assert Counter(label for _, label in rows[split]) == {"0": half, "1": half}


def test_loader_returns_the_file_rows_in_order_with_class_labels(rows, loaded):
    assert set(loaded) == {"train", "test"}
    for split, file_rows in rows.items():
        data = loaded[split]
        assert data.num_rows == len(file_rows)
        assert list(data["sentence"]) == [sentence for sentence, _ in file_rows]
        assert list(data["label"]) == [int(label) for _, label in file_rows]
        assert data.features["sentence"].dtype == "string"
        assert data.features["label"].names == ["negative", "positive"]
        assert data.features["label"].str2int("positive") == 1


def test_labels_are_zero_or_one_and_sentences_are_clean_plain_text(rows):
    for split_rows in rows.values():
        for sentence, label in split_rows:
            assert label in {"0", "1"}
            assert sentence == sentence.strip() and sentence, repr(sentence)
            assert 5 <= len(sentence.split()) <= 30, sentence
            assert sentence.isascii() and sentence.isprintable(), sentence
            assert '"' not in sentence, sentence  # the files are read unquoted


def test_no_sentence_repeats_within_or_across_splits(rows):
    normalized = [
        " ".join(sentence.lower().split())
        for split_rows in rows.values()
        for sentence, _ in split_rows
    ]
    repeated = [sentence for sentence, count in Counter(normalized).items() if count > 1]
    assert repeated == []


def test_no_test_sentence_is_a_near_duplicate_of_a_train_sentence(rows):
    train = [word_set(sentence) for sentence, _ in rows["train"]]
    test = [word_set(sentence) for sentence, _ in rows["test"]]
    worst = max(len(a & b) / len(a | b) for a, b in itertools.product(train, test))
    assert worst < 0.8


def test_folder_and_file_helpers_point_at_the_shipped_files():
    folder = sentiment_example_dir()
    assert folder.resolve() == DATA
    assert (folder / "README.md").is_file()
    files = sentiment_example_files()
    assert set(files) == {"train", "test"}
    for split, file in files.items():
        assert file.read_text(encoding="utf-8") == (DATA / f"{split}.tsv").read_text("ascii")
