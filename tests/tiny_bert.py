"""Tiny BERT classifiers and a WordPiece tokenizer built locally, for fast tests with no download."""

from __future__ import annotations

import string
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "the",
    "a",
    "an",
    "this",
    "that",
    "it",
    "is",
    "was",
    "movie",
    "film",
    "story",
    "plot",
    "actor",
    "actors",
    "acting",
    "scene",
    "scenes",
    "good",
    "great",
    "bad",
    "awful",
    "terrible",
    "wonderful",
    "boring",
    "funny",
    "dull",
    "brilliant",
    "fine",
    "not",
    "very",
    "really",
    "quite",
    "and",
    "but",
    "with",
    "of",
    "to",
    "in",
    "on",
    "for",
    "too",
    "much",
    "more",
    "less",
    "best",
    "worst",
    "love",
    "loved",
    "hate",
    "hated",
    "like",
    "liked",
    "fun",
    "mess",
    "charming",
    "slow",
    "fast",
    "smart",
    "stupid",
    "beautiful",
    "ugly",
    "moving",
    "flat",
    "music",
    "ending",
    "director",
    ",",
    ".",
    "!",
    "?",
]


def write_vocab(folder: Path) -> Path:
    """A WordPiece vocabulary: special tokens, a few hundred words, and every letter as a piece."""
    letters = list(string.ascii_lowercase) + list(string.digits)
    tokens = SPECIAL_TOKENS + WORDS + letters + [f"##{c}" for c in letters]
    path = folder / "vocab.txt"
    path.write_text("\n".join(dict.fromkeys(tokens)) + "\n", encoding="utf-8")
    return path


def tiny_tokenizer(folder: Path) -> BertTokenizerFast:
    """A BERT tokenizer over :func:`write_vocab`'s vocabulary, saved in ``folder``.

    transformers 5 ignores ``vocab_file=`` (every token becomes [UNK]) and wants ``vocab=``;
    4.57 wants ``vocab_file=``: pass both and check the result.
    """
    vocab = write_vocab(folder)
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), vocab=str(vocab), model_max_length=64)
    if tokenizer.convert_tokens_to_ids("movie") == tokenizer.unk_token_id:
        raise RuntimeError("the tiny tokenizer did not read its vocabulary")
    tokenizer.save_pretrained(folder)
    return tokenizer


def tiny_bert_config(num_labels: int = 2, num_layers: int = 2, vocab_size: int = 200) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=num_labels,
    )


def tiny_bert(
    num_labels: int = 2, num_layers: int = 2, seed: int = 0, vocab_size: int = 200
) -> BertForSequenceClassification:
    """A randomly initialised tiny BERT classifier, the same for the same seed."""
    torch.manual_seed(seed)
    model = BertForSequenceClassification(tiny_bert_config(num_labels, num_layers, vocab_size))
    return model.eval()


POSITIVE = [
    "good",
    "great",
    "wonderful",
    "funny",
    "brilliant",
    "fine",
    "charming",
    "beautiful",
    "fun",
]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dull", "stupid", "ugly", "mess", "flat"]
FILLER = [
    "the",
    "movie",
    "film",
    "story",
    "acting",
    "music",
    "ending",
    "was",
    "is",
    "very",
    "really",
]


def tiny_sentiment_texts(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` short sentences with a learnable label: 1 when the sentiment word is positive."""
    generator = torch.Generator().manual_seed(seed)
    texts, labels = [], []
    for _ in range(n):
        label = int(torch.randint(0, 2, (1,), generator=generator))
        words = POSITIVE if label else NEGATIVE
        picks = torch.randint(0, len(FILLER), (4,), generator=generator).tolist()
        word = words[int(torch.randint(0, len(words), (1,), generator=generator))]
        sentence = [FILLER[i] for i in picks[:3]] + [word] + [FILLER[picks[3]]]
        texts.append(" ".join(sentence))
        labels.append(label)
    return texts, labels


def tiny_sentiment_dataset(tokenizer: BertTokenizerFast, n: int = 64, seed: int = 0):  # type: ignore[no-untyped-def]
    """A tokenized ``datasets.Dataset`` of :func:`tiny_sentiment_texts` (columns the Trainer wants)."""
    from datasets import Dataset

    texts, labels = tiny_sentiment_texts(n, seed)
    encoded = tokenizer(texts, truncation=True, max_length=16)
    return Dataset.from_dict({**encoded, "labels": labels})


def fit_full_batch(
    model: torch.nn.Module, batch: Mapping[str, Any], labels: list[int], steps: int
) -> torch.nn.Module:
    """``model`` trained ``steps`` AdamW steps (lr 3e-3) on one whole batch, returned in eval mode:
    how the tests fit their tiny teachers (enough to be right on most, not all, examples)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    target = torch.tensor(labels)
    for _ in range(steps):
        model(**batch, labels=target).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()
