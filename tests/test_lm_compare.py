"""Two tiny causal LMs in lockstep over windows, and the teacher cache, against a naive computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import log_softmax, rel_entr, softmax
from tiny_causal_lm import VOCAB, perturbed, tiny_llama, token_stream

from loyalkit.metrics import lm_compare
from loyalkit.metrics.lm_compare import (
    TeacherCache,
    WindowConfig,
    build_teacher_cache,
    compare_causal_lms,
    compare_with_teacher_cache,
    row_chunks,
    scored_output,
    window_batches,
)

torch.set_num_threads(1)


def _naive_logits(model, stream: torch.Tensor, window: int, stride: int) -> tuple[np.ndarray, list]:
    """Hugging Face's sliding-window recipe, written out: each token scored once, in order."""
    rows, targets, previous_end = [], [], 0
    for begin in range(0, len(stream), stride):
        end = min(begin + window, len(stream))
        new = min(end - previous_end, end - begin - 1)
        with torch.no_grad():
            logits = model(input_ids=stream[None, begin:end]).logits[0].double().numpy()
        rows.append(logits[-new - 1 : -1])
        targets.extend(stream[end - new : end].tolist())
        previous_end = end
        if end == len(stream):
            break
    return np.concatenate(rows), targets


def _naive_report(teacher, student, stream, window, stride) -> dict:
    t, targets = _naive_logits(teacher, stream, window, stride)
    s, _ = _naive_logits(student, stream, window, stride)
    p, q = softmax(t, axis=1), softmax(s, axis=1)
    kl = rel_entr(p, q).sum(axis=1)
    rows = np.arange(len(targets))
    return {
        "targets": targets,
        "label_loyalty": (t.argmax(1) == s.argmax(1)).mean(),
        "probability_loyalty": (1 - jensenshannon(p, q, axis=1)).mean(),
        "kl": kl,
        "delta_p": q[rows, targets] - p[rows, targets],
        "ppl_ratio": math.exp(
            log_softmax(t, axis=1)[rows, targets].mean()
            - log_softmax(s, axis=1)[rows, targets].mean()
        ),
    }


@pytest.mark.parametrize(("window", "stride", "batch_size"), [(16, 8, 3), (10, 3, 4), (7, 6, 1)])
def test_windows_score_every_token_once_in_order(window, stride, batch_size):
    stream = torch.arange(53)
    config = WindowConfig(window=window, stride=stride, batch_size=batch_size)
    targets = torch.cat([batch.targets for batch in window_batches(stream, config)])
    assert targets.tolist() == list(range(1, 53))


def test_disjoint_chunks_leave_each_chunk_start_unscored():
    config = WindowConfig(window=16, stride=16, batch_size=2)
    targets = torch.cat([batch.targets for batch in window_batches(torch.arange(53), config)])
    assert targets.tolist() == [t for t in range(1, 53) if t % 16 != 0]


@pytest.mark.parametrize(("window", "stride", "batch_size"), [(16, 8, 3), (20, 20, 2), (12, 5, 1)])
def test_lockstep_report_matches_the_naive_computation(window, stride, batch_size):
    teacher = tiny_llama()
    student = perturbed(teacher)
    stream = token_stream(61)
    config = WindowConfig(window=window, stride=stride, batch_size=batch_size)
    result = compare_causal_lms(teacher, student, stream, config)
    expected = _naive_report(teacher, student, stream, window, stride)
    assert result["num_tokens"] == len(expected["targets"]) == (60 if stride < window else 57)
    assert 0.3 < result["label_loyalty"] < 1.0  # the student really differs
    assert result["label_loyalty"] == pytest.approx(expected["label_loyalty"])
    assert result["probability_loyalty"] == pytest.approx(expected["probability_loyalty"], rel=1e-5)
    assert result["kl_divergence"]["mean"] == pytest.approx(expected["kl"].mean(), rel=1e-4)
    assert result["kl_divergence"]["percentiles"]["99%"] == pytest.approx(
        np.percentile(expected["kl"], 99), rel=1e-4
    )
    assert result["delta_p"]["rms"] == pytest.approx(
        math.sqrt((expected["delta_p"] ** 2).mean()), rel=1e-4
    )
    assert result["ppl_ratio"] == pytest.approx(expected["ppl_ratio"], rel=1e-5)


def test_lockstep_report_in_small_row_chunks_matches_the_naive_computation(monkeypatch):
    # Three rows per chunk: every batch's scored positions are split across several chunks.
    monkeypatch.setattr(lm_compare, "_CHUNK_ELEMENTS", 3 * VOCAB)
    teacher = tiny_llama()
    student = perturbed(teacher)
    stream = token_stream(61)
    result = compare_causal_lms(teacher, student, stream, WindowConfig(16, 8, batch_size=3))
    expected = _naive_report(teacher, student, stream, 16, 8)
    assert result["num_tokens"] == 60
    assert result["label_loyalty"] == pytest.approx(expected["label_loyalty"])
    assert result["probability_loyalty"] == pytest.approx(expected["probability_loyalty"], rel=1e-5)
    assert result["kl_divergence"]["mean"] == pytest.approx(expected["kl"].mean(), rel=1e-4)
    assert result["ppl_ratio"] == pytest.approx(expected["ppl_ratio"], rel=1e-5)


def _model_logits_at(model, batch) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids).logits
    return logits[batch.rows, batch.positions]


def test_scored_output_keeps_hidden_states_and_makes_the_models_logits_by_rows(monkeypatch):
    monkeypatch.setattr(lm_compare, "_CHUNK_ELEMENTS", 4 * VOCAB)
    model = tiny_llama()
    batch = next(window_batches(token_stream(40), WindowConfig(16, 8, batch_size=2)))
    with torch.no_grad():
        output = scored_output(model, batch)
        assert output.full is None and output.hidden is not None  # no (tokens x vocab) tensor
        assert output.hidden.shape == (len(batch.targets), model.config.hidden_size)
        chunks = list(row_chunks(output, output))
        assert chunks[0] == (0, 4) and chunks[-1][1] == len(batch.targets)
        logits = torch.cat([output.logits(start, stop) for start, stop in chunks])
    torch.testing.assert_close(logits, _model_logits_at(model, batch), rtol=1e-5, atol=1e-6)


class _HalvedLogits(torch.nn.Module):
    """A causal LM that post-processes its head's output, as soft-capping models do."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def get_output_embeddings(self):
        return self.model.get_output_embeddings()

    def forward(self, input_ids, logits_to_keep=0, use_cache=None):
        outputs = self.model(input_ids=input_ids, logits_to_keep=logits_to_keep)
        return (outputs.logits * 0.5,)


def test_scored_output_falls_back_to_the_logits_of_a_model_that_changes_them():
    model = tiny_llama()
    batch = next(window_batches(token_stream(40), WindowConfig(16, 8, batch_size=2)))
    with torch.no_grad():
        output = scored_output(_HalvedLogits(model), batch)
    assert output.full is not None and output.hidden is None
    torch.testing.assert_close(
        output.logits(0, len(batch.targets)), 0.5 * _model_logits_at(model, batch)
    )


def test_max_tokens_cuts_the_stream():
    teacher = tiny_llama()
    result = compare_causal_lms(teacher, teacher, token_stream(50), WindowConfig(8, max_tokens=20))
    assert result["num_tokens"] == 19
    assert result["label_loyalty"] == 1.0


def test_teacher_cache_round_trip_and_exactness(tmp_path):
    teacher = tiny_llama()
    student = perturbed(teacher)
    stream = token_stream(45)
    config = WindowConfig(window=16, stride=8, batch_size=2)
    exact = compare_causal_lms(teacher, student, stream, config)

    full = build_teacher_cache(teacher, stream, config, top_k=tiny_llama().config.vocab_size)
    path = full.save(tmp_path / "teacher.safetensors")
    loaded = TeacherCache.load(path)
    assert loaded.window == 16 and loaded.stride == 8 and loaded.top_k == 120
    np.testing.assert_array_equal(loaded.token_ids, stream.numpy())
    with_all = compare_with_teacher_cache(loaded, student, batch_size=3)
    # The whole vocabulary cached: equal up to the float32 storage of log-probabilities.
    assert with_all["kl_divergence"]["mean"] == pytest.approx(
        exact["kl_divergence"]["mean"], rel=1e-4
    )
    assert with_all["probability_loyalty"] == pytest.approx(exact["probability_loyalty"], rel=1e-5)

    top8 = compare_with_teacher_cache(
        build_teacher_cache(teacher, stream, config, top_k=8), student
    )
    assert top8["label_loyalty"] == exact["label_loyalty"]
    assert top8["ppl_ratio"] == pytest.approx(exact["ppl_ratio"], rel=1e-5)
    assert top8["delta_p"]["mean"] == pytest.approx(exact["delta_p"]["mean"], abs=1e-6)
    assert top8["kl_divergence"]["mean"] <= exact["kl_divergence"]["mean"]
    assert top8["probability_loyalty"] >= exact["probability_loyalty"]


def test_teacher_cache_refuses_other_files(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "other.safetensors"
    save_file({"x": np.zeros(2, dtype=np.float32)}, str(path))
    with pytest.raises(ValueError, match="format"):
        TeacherCache.load(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TeacherCache.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 1}, "at least 2"),
        ({"window": 8, "stride": 9}, "must not exceed"),
        ({"window": 8, "stride": 0}, "stride"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_tokens": 1}, "max_tokens"),
        ({"window": 2.5}, "window"),
    ],
)
def test_window_config_errors_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WindowConfig(**kwargs)


def test_models_with_different_vocabularies_are_refused():
    with pytest.raises(ValueError, match="share a vocabulary"):
        compare_causal_lms(
            tiny_llama(), tiny_llama(vocab_size=130), token_stream(20), WindowConfig(8)
        )
