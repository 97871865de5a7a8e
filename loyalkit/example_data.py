"""The small English sentiment dataset shipped with loyalkit (the quick study preset's task).

Original review sentences written for loyalkit (Apache-2.0): 480 train and 160 test, each split
exactly balanced; label 1 = positive, 0 = negative. The data card is
``loyalkit/data/sentiment/README.md``.

>>> from loyalkit.example_data import load_sentiment_example
>>> data = load_sentiment_example()
>>> data.num_rows
{'train': 480, 'test': 160}
>>> data["train"].features["label"].names
['negative', 'positive']
"""

from __future__ import annotations

import csv
import io
import sys
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datasets import DatasetDict

    if sys.version_info >= (3, 11):
        from importlib.resources.abc import Traversable
    else:
        from importlib.abc import Traversable

SENTIMENT_EXAMPLE_SPLITS: tuple[str, ...] = ("train", "test")
SENTIMENT_EXAMPLE_LABELS: tuple[str, ...] = ("negative", "positive")


def sentiment_example_files() -> dict[str, Traversable]:
    """The packaged split files, ``{"train": .../train.tsv, "test": .../test.tsv}``.

    Works for any install (wheel, editable, zip); use ``sentiment_example_dir`` when a tool
    needs a real folder on disk.
    """
    folder = files("loyalkit") / "data" / "sentiment"
    return {split: folder / f"{split}.tsv" for split in SENTIMENT_EXAMPLE_SPLITS}


def sentiment_example_dir() -> Path:
    """The folder on disk holding ``train.tsv``, ``test.tsv`` and the data card ``README.md``.

    For tools that take file paths, e.g. ``run_glue``-style ``--train_file``.

    >>> sorted(p.name for p in sentiment_example_dir().glob("*.tsv"))
    ['test.tsv', 'train.tsv']
    """
    folder = files("loyalkit") / "data" / "sentiment"
    path = Path(str(folder))
    if not (path / "train.tsv").is_file():
        # A zipped install has no folder to point at; the loader still works there.
        raise FileNotFoundError(
            f"loyalkit's sentiment example is not unpacked on disk ({folder}); "
            "use load_sentiment_example() or sentiment_example_files() instead"
        )
    return path


def _read_split(file: Traversable) -> dict[str, list]:
    # QUOTE_NONE: sentences are plain text with no quoting; a stray quote must stay literal.
    reader = csv.DictReader(
        io.StringIO(file.read_text(encoding="utf-8")), delimiter="\t", quoting=csv.QUOTE_NONE
    )
    sentences: list[str] = []
    labels: list[int] = []
    for row in reader:
        sentences.append(row["sentence"])
        labels.append(int(row["label"]))
    return {"sentence": sentences, "label": labels}


def load_sentiment_example() -> DatasetDict:
    """Load the packaged sentiment dataset as a ``datasets.DatasetDict`` (``train``, ``test``).

    Features: ``sentence`` (string) and ``label`` (``ClassLabel``, names
    ``["negative", "positive"]``). Read from the installed package; no network, no cache.

    >>> data = load_sentiment_example()
    >>> data["test"].features["label"].int2str(1)
    'positive'
    >>> sum(data["test"]["label"])
    80
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features(
        {"sentence": Value("string"), "label": ClassLabel(names=list(SENTIMENT_EXAMPLE_LABELS))}
    )
    return DatasetDict(
        {
            split: Dataset.from_dict(_read_split(file), features=features, split=split)
            for split, file in sentiment_example_files().items()
        }
    )
