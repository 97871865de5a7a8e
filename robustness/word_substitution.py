"""Synonym candidates for TextFooler-offline, from local files, as TextAttack transformations.

Accepted sources (``OfflineResources.synonyms``):

- a ``.json`` file ``{"word": ["neighbour", ...], ...}``, nearest first: the counter-fitted
  neighbour sets of Alzantot et al. (2018), e.g. ``counterfitted_neighbors.json`` from
  ``robinjia/certified-word-sub`` (up to 8 neighbours per word, already limited to close
  neighbours in the counter-fitted space, so no vectors are needed);
- a folder with TextAttack's own counter-fitted embeddings (``paragram.npy``, ``wordlist.pickle``,
  optionally ``nn.npy``), i.e. ``$TA_CACHE_DIR/word_embeddings/paragramcf``: TextFooler's source;
- a word-vector text file (``.txt``/``.vec``, optionally ``.gz``): one ``word v1 ... vD`` per
  line, GloVe or word2vec text format (a ``count dim`` header line is skipped; entries that are
  not alphabetic words, such as punctuation and numbers, are dropped).

Vectors are wrapped as a TextAttack ``WordEmbedding``, made unit length, with nearest neighbours
ranked by cosine as in TextFooler.

Example:
    >>> neighbours = {"good": ["fine", "decent"], "bad": ["awful"]}
    >>> neighbour_candidates(neighbours, "Good", max_candidates=1)
    ['Fine']
"""

from __future__ import annotations

import gzip
import json
import pickle
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from loyalkit.robustness.textattack_setup import MissingResourceError

PARAGRAMCF_FILES = ("paragram.npy", "wordlist.pickle")


def load_neighbours(path: Path) -> dict[str, list[str]]:
    """Read a ``{word: [neighbours]}`` JSON file, checking its shape."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(w, str) for w in v) for v in data.values()
    ):
        raise ValueError(f"synonyms={str(path)!r}: expected a JSON object word -> list of words")
    return data


def recover_case(candidate: str, original: str) -> str:
    """``candidate`` with the capitalisation pattern of ``original`` (as TextAttack does)."""
    if original.islower():
        return candidate.lower()
    if original.isupper() and len(original) > 1:
        return candidate.upper()
    if original[:1].isupper() and original[1:].islower():
        return candidate[:1].upper() + candidate[1:].lower()
    return candidate


def neighbour_candidates(
    neighbours: Mapping[str, Sequence[str]], word: str, max_candidates: int
) -> list[str]:
    """Up to ``max_candidates`` single-word neighbours of ``word`` (looked up in lower case)."""
    found = neighbours.get(word.lower(), ())
    return [recover_case(w, word) for w in found if w.isalpha()][:max_candidates]


def load_word_vectors(path: Path) -> tuple[np.ndarray, list[str]]:
    """Read a GloVe / word2vec text file into a ``(words, dim)`` float32 matrix and its words
    (alphabetic words only)."""
    opener: Any = gzip.open if str(path).endswith(".gz") else open
    words: list[str] = []
    rows: list[np.ndarray] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for number, line in enumerate(f):
            parts = line.rstrip().split(" ")
            if number == 0 and len(parts) == 2:
                continue  # word2vec header: vocabulary size and dimension
            if len(parts) < 2 or not parts[0].isalpha():
                continue  # GloVe also lists punctuation and numbers: not word substitutes
            words.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
    if not rows or len({r.shape for r in rows}) != 1:
        raise ValueError(f"synonyms={str(path)!r}: expected lines `word v1 ... vD` of one length")
    return np.stack(rows), words


def word_embedding(
    matrix: np.ndarray, words: Sequence[str], nn_matrix: np.ndarray | None = None
) -> Any:
    """A TextAttack ``WordEmbedding`` over ``matrix`` rows named ``words``, rows made unit length."""
    from textattack.shared import WordEmbedding

    if matrix.ndim != 2 or len(words) != matrix.shape[0]:
        raise ValueError(
            f"matrix must be 2-D with one row per word; got {matrix.shape} for {len(words)} words"
        )
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = (matrix / np.maximum(norms, 1e-12)).astype(np.float32)
    word2index = {w: i for i, w in enumerate(words)}
    cls = WordEmbedding if nn_matrix is not None else _cosine_embedding_class()
    return cls(unit, word2index, dict(enumerate(words)), nn_matrix)


@lru_cache(maxsize=1)
def _cosine_embedding_class() -> type:
    # TextAttack 0.3.11 computes neighbours on the fly only when there is no `nn_matrix`, and that
    # path fails (`dist.topk(...)[1:]` slices the (values, indices) tuple); ranking by cosine
    # over unit rows here is what TextFooler does.
    import torch
    from textattack.shared import WordEmbedding

    class CosineWordEmbedding(WordEmbedding):
        """A ``WordEmbedding`` whose nearest neighbours are found by cosine, on demand, cached."""

        def nearest_neighbours(self, index: int | str, topn: int) -> list[int]:
            row = int(self._word2index[index]) if isinstance(index, str) else int(index)
            if (row, topn) not in self._nn_cache:
                matrix = torch.from_numpy(np.asarray(self.embedding_matrix))
                scores = matrix @ matrix[row]
                scores[row] = -float("inf")  # the word itself
                top = torch.topk(scores, min(topn, len(scores) - 1)).indices
                self._nn_cache[(row, topn)] = top.tolist()
            return list(self._nn_cache[(row, topn)])

    return CosineWordEmbedding


def load_paragramcf(folder: Path) -> Any:
    """TextAttack's counter-fitted embeddings from their cache folder, with no download."""
    from textattack.shared import WordEmbedding

    matrix = np.load(folder / "paragram.npy")
    with open(folder / "wordlist.pickle", "rb") as f:
        word2index = pickle.load(f)
    nn_path = folder / "nn.npy"
    nn_matrix = np.load(nn_path) if nn_path.is_file() else None
    index2word = {index: word for word, index in word2index.items()}
    return WordEmbedding(matrix, word2index, index2word, nn_matrix)


def is_paragramcf(folder: Path) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in PARAGRAMCF_FILES)


def synonym_swap(source: Path, max_candidates: int = 50) -> tuple[Any, Any | None]:
    """The transformation for ``source`` and, for vector sources, its ``WordEmbedding``.

    Returns ``(transformation, embedding)``: ``embedding`` is ``None`` for a neighbour-set JSON
    file (there are no vectors to apply TextFooler's cosine >= 0.5 filter to).

    Raises:
        MissingResourceError: ``source`` does not exist.
        ValueError: ``source`` is not in an accepted format.
    """
    source = Path(source)
    if max_candidates < 1:
        raise ValueError(f"max_candidates must be a positive integer, got {max_candidates!r}")
    if not source.exists():
        raise MissingResourceError(
            f"synonyms={str(source)!r} does not exist; TextFooler-offline needs a synonym source: "
            "the counter-fitted neighbour sets (counterfitted_neighbors.json from "
            "github.com/robinjia/certified-word-sub, data/), TextAttack's paragramcf folder, or a "
            "GloVe/word2vec text file; pass it as OfflineResources(synonyms=PATH)"
        )
    if source.is_dir():
        if not is_paragramcf(source):
            raise ValueError(
                f"synonyms={str(source)!r} is a folder without TextAttack's {PARAGRAMCF_FILES}"
            )
        embedding = load_paragramcf(source)
        return _embedding_swap(embedding, max_candidates), embedding
    if source.suffix == ".json":
        return _neighbour_swap_class()(load_neighbours(source), max_candidates), None
    matrix, words = load_word_vectors(source)
    embedding = word_embedding(matrix, words)
    return _embedding_swap(embedding, max_candidates), embedding


def _embedding_swap(embedding: Any, max_candidates: int) -> Any:
    from textattack.transformations import WordSwapEmbedding

    return WordSwapEmbedding(max_candidates=max_candidates, embedding=embedding)


@lru_cache(maxsize=1)
def _neighbour_swap_class() -> type:
    # Defined on first use: the base class comes from TextAttack, which is imported only then.
    from textattack.transformations import WordSwap

    class WordSwapNeighbours(WordSwap):
        """Swaps a word for one of its listed neighbours (counter-fitted synonym sets)."""

        def __init__(self, neighbours: Mapping[str, Sequence[str]], max_candidates: int) -> None:
            super().__init__()
            self.neighbours = neighbours
            self.max_candidates = max_candidates

        def _get_replacement_words(self, word: str) -> list[str]:
            return neighbour_candidates(self.neighbours, word, self.max_candidates)

        def extra_repr_keys(self) -> list[str]:
            return ["max_candidates"]

    return WordSwapNeighbours
