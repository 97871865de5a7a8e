"""Scaffolding for the attack tests and ``attack_distributed_worker.py``: a tiny classifier fitted
to the toy sentiment task (:func:`make_classifier`, loaded by :func:`classifier_setup`), offline
TextAttack resources (:func:`offline_resources`) and raw-text datasets (:func:`raw_dataset`).

TextAttack is imported by none of it at module level: the main environment (no TextAttack) imports
this module too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tiny_bert import fit_full_batch, tiny_bert, tiny_sentiment_texts, tiny_tokenizer
from transformers import AutoTokenizer, BertForSequenceClassification

if TYPE_CHECKING:
    import pytest

#: How many toy sentences (seed 0) :func:`make_classifier` fits the classifier to.
TRAIN_SIZE = 48


def offline_resources(folder: Path) -> Any:
    """TextAttack's offline resources in ``folder``: stop words (no WordNet) and its cache."""
    from loyalkit.robustness.textattack_setup import OfflineResources, prepare_nltk_data

    nltk_data = folder / "nltk_data"
    if not (nltk_data / "corpora" / "stopwords" / "english").is_file():
        prepare_nltk_data(nltk_data, wordnet_dir=None)
    return OfflineResources(nltk_data=nltk_data, cache_dir=folder / "textattack")


def raw_dataset(n: int, seed: int, tokenizer: Any = None) -> Any:
    """``datasets.Dataset`` of toy sentences: ``sentence``, ``label`` (and tokens if asked)."""
    from datasets import Dataset

    texts, labels = tiny_sentiment_texts(n, seed)
    columns: dict[str, Any] = {"sentence": texts, "label": labels}
    if tokenizer is not None:
        columns.update(tokenizer(texts, truncation=True, max_length=16))
    return Dataset.from_dict(columns)


def make_classifier(folder: Path, steps: int = 40) -> Path:
    """A tiny BERT fitted to the toy sentiment task (right on most, not all, examples), saved with
    its tokenizer in ``folder``."""
    torch.set_num_threads(1)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_tokenizer(folder)
    texts, labels = tiny_sentiment_texts(TRAIN_SIZE, seed=0)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    fit_full_batch(tiny_bert(seed=1), batch, labels, steps).save_pretrained(folder)
    return folder


def classifier_setup(tmp_path_factory: pytest.TempPathFactory, steps: int = 40) -> dict[str, Any]:
    """What the attack tests' module fixtures start from: :func:`make_classifier`'s ``folder``
    (trained ``steps`` steps), its ``tokenizer`` and ``model`` (eval mode) loaded from it, and
    offline TextAttack ``resources``, each in a fresh temporary folder."""
    folder = make_classifier(tmp_path_factory.mktemp("classifier"), steps)
    return {
        "folder": folder,
        "resources": offline_resources(tmp_path_factory.mktemp("resources")),
        "tokenizer": AutoTokenizer.from_pretrained(folder),
        "model": BertForSequenceClassification.from_pretrained(folder).eval(),
    }


class QueryHook(torch.nn.Module):
    """The classifier ``model``, with :meth:`before_query` called before every eval-mode forward
    (the attack's and the evaluation's queries); training forwards pass straight through."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model, self.config = model, model.config

    def before_query(self, input_ids: torch.Tensor) -> None:
        """Override: what to do (raise, kill a process...) before the model answers."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Any:
        if not self.training:
            self.before_query(input_ids)
        return self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            labels=labels,
        )


class RaisesOnToken(QueryHook):
    """A classifier that raises for any query holding ``token_id`` (that example's attack fails)."""

    def __init__(self, model: torch.nn.Module, token_id: int) -> None:
        super().__init__(model)
        self.token_id = token_id

    def before_query(self, input_ids: torch.Tensor) -> None:
        if (input_ids == self.token_id).any():
            raise RuntimeError("poisoned input")
