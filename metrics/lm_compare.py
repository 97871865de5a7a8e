"""Run a teacher and a student causal LM in lockstep over a token stream: token-level loyalty.

The corpus is one stream of token ids cut into windows of ``window`` tokens that start every
``stride`` tokens (Hugging Face's sliding-window perplexity): the first window scores all its
positions, every later one only the tokens no earlier window scored, each with at least
``window - stride`` tokens of context. ``stride == window`` gives disjoint chunks, whose first
tokens (no context) are not scored. Windows of equal
length go through both models ``batch_size`` at a time. Of each pass only the input of the output
layer at the scored positions is kept (``batch_size x window x hidden size``); both models' logits
are then made from it a chunk of rows at a time (2^22 elements, 85 rows on a 49k vocabulary), and
each chunk's statistics are added to a
:class:`~loyalkit.metrics.token_loyalty.TokenLoyaltyAccumulator` and the logits dropped. So a
window's full logits never exist, and memory never holds the corpus's distributions (a model whose
logits are more than its output layer's output falls back to ``batch_size x window x vocabulary``).

The optional teacher cache (:class:`TeacherCache`) stores the teacher's top-k log-probabilities
once (safetensors, no pickle), so that many students are compared without running the teacher
again; see :func:`~loyalkit.metrics.token_loyalty.topk_token_statistics` for what is exact. The
gap is not small: on SmolLM2-135M (49k vocabulary) the int8 student's KL mean came out 24% low from
a top-64 cache and 13% low from top-256 (benchmarks/RESULTS.md), so screen students with the cache
and report exact runs.

Example:
    >>> import torch
    >>> from transformers import GPT2Config, GPT2LMHeadModel
    >>> _ = torch.manual_seed(0)
    >>> config = GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32)
    >>> teacher = GPT2LMHeadModel(config).eval()
    >>> tokens = torch.randint(0, 50, (40,))
    >>> result = compare_causal_lms(teacher, teacher, tokens, WindowConfig(window=16, stride=8))
    >>> result["label_loyalty"], result["num_tokens"], result["kl_divergence"]["mean"]
    (1.0, 39, 0.0)
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from loyalkit.metrics.token_loyalty import (
    TokenLoyaltyAccumulator,
    TokenStatistics,
    token_statistics,
    topk_token_statistics,
)

__all__ = [
    "ScoredOutput",
    "TeacherCache",
    "WindowBatch",
    "WindowConfig",
    "batch_statistics",
    "build_teacher_cache",
    "compare_causal_lms",
    "compare_with_teacher_cache",
    "row_chunks",
    "scored_logits",
    "scored_output",
    "window_batches",
]

_CACHE_FORMAT = "loyalkit-teacher-topk-1"
_CHUNK_ELEMENTS = 1 << 22


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class WindowConfig:
    """How the token stream is cut and batched (validated once, here).

    Args:
        window: tokens per forward pass (at most the model's context length).
        stride: tokens between window starts, ``1 <= stride <= window``; ``None`` is ``window // 2``
            (each scored token then sees at least half a window of context).
        batch_size: windows per forward pass.
        max_tokens: use only the first ``max_tokens`` tokens of the stream (``None``: all).
    """

    window: int = 512
    stride: int | None = None
    batch_size: int = 4
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        window = _positive_int(self.window, "window")
        if window < 2:
            raise ValueError(f"`window` must be at least 2 tokens, got {window}")
        stride = (
            max(1, window // 2) if self.stride is None else _positive_int(self.stride, "stride")
        )
        if stride > window:
            raise ValueError(
                f"`stride` ({stride}) must not exceed `window` ({window}): tokens between windows "
                "would never be scored"
            )
        object.__setattr__(self, "stride", stride)
        _positive_int(self.batch_size, "batch_size")
        if self.max_tokens is not None and _positive_int(self.max_tokens, "max_tokens") < 2:
            raise ValueError("`max_tokens` must be at least 2 (one context, one scored token)")


@dataclass(frozen=True)
class WindowBatch:
    """One forward pass: ``input_ids`` (batch, length) and the scored positions in it.

    ``rows`` and ``positions`` index the logits (logits at position j predict token j + 1);
    ``targets`` are the reference tokens there.
    """

    input_ids: torch.Tensor
    rows: torch.Tensor
    positions: torch.Tensor
    targets: torch.Tensor

    @property
    def logits_to_keep(self) -> int:
        """How many final positions hold every scored logit (the rest need not be computed)."""
        return int(self.input_ids.shape[1] - self.positions.min())


def _as_token_stream(token_ids: Any, config: WindowConfig) -> torch.Tensor:
    stream = torch.as_tensor(np.asarray(token_ids)).reshape(-1)
    if stream.is_floating_point() or stream.dtype == torch.bool:
        raise TypeError(f"`token_ids` must be integer token ids, got dtype {stream.dtype}")
    if config.max_tokens is not None:
        stream = stream[: config.max_tokens]
    if stream.numel() < 2:
        raise ValueError(
            f"`token_ids` has {stream.numel()} token(s): at least 2 are needed to score one"
        )
    return stream.long()


def _windows(num_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored token) of each window over ``num_tokens`` tokens."""
    spans, start, scored_until = [], 0, 1
    while True:
        end = min(start + window, num_tokens)
        # A window's first token has no context inside it: with stride == window it goes unscored.
        if max(scored_until, start + 1) < end:
            spans.append((start, end, max(scored_until, start + 1)))
        if end == num_tokens:
            return spans
        scored_until, start = end, start + stride


def window_batches(token_ids: Any, config: WindowConfig) -> Iterator[WindowBatch]:
    """The forward passes that score every token of ``token_ids`` once, in stream order."""
    stream = _as_token_stream(token_ids, config)
    assert config.stride is not None
    spans = _windows(stream.numel(), config.window, config.stride)
    group: list[tuple[int, int, int]] = []
    for span in spans + [(0, 0, 0)]:  # the sentinel flushes the last group
        length = span[1] - span[0]
        if group and (len(group) == config.batch_size or length != group[0][1] - group[0][0]):
            yield _batch(stream, group)
            group = []
        group.append(span)


def _batch(stream: torch.Tensor, spans: list[tuple[int, int, int]]) -> WindowBatch:
    rows, positions = [], []
    for row, (start, end, first) in enumerate(spans):
        scored = torch.arange(first, end)
        rows.append(torch.full_like(scored, row))
        positions.append(scored - start - 1)
    input_ids = torch.stack([stream[start:end] for start, end, _ in spans])
    row_index, position_index = torch.cat(rows), torch.cat(positions)
    return WindowBatch(
        input_ids, row_index, position_index, input_ids[row_index, position_index + 1]
    )


def _device(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _check_model(model: Any, name: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(
            f"`{name}` must be a causal LM (torch.nn.Module), got {type(model).__name__}"
        )
    return model


def _forward_kwargs(model: nn.Module, batch: WindowBatch) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    # Causal LMs in transformers 5 compute the head only for the last `logits_to_keep` positions:
    # with stride = window / 2 that halves the largest tensor of the pass.
    parameters = inspect.signature(model.forward).parameters
    if "logits_to_keep" in parameters:
        kwargs["logits_to_keep"] = batch.logits_to_keep
    if "use_cache" in parameters:
        kwargs["use_cache"] = False  # windows are independent: a KV cache is memory for nothing
    return kwargs


def _logits_of(outputs: Any) -> torch.Tensor:
    return outputs.logits if hasattr(outputs, "logits") else outputs[0]


def scored_logits(model: nn.Module, batch: WindowBatch) -> torch.Tensor:
    """The model's logits at the batch's scored positions, (scored tokens, vocabulary)."""
    device = _device(model)
    logits = _logits_of(
        model(input_ids=batch.input_ids.to(device), **_forward_kwargs(model, batch))
    )
    offset = batch.input_ids.shape[1] - logits.shape[1]
    return logits[batch.rows.to(device), (batch.positions - offset).to(device)]


@dataclass(frozen=True)
class ScoredOutput:
    """One model's output at a batch's scored positions, whose logits are made on demand.

    Either ``hidden`` (scored tokens, hidden size), the input of the model's output layer ``head``,
    so that :meth:`logits` computes a few rows' logits at a time and a window's full
    (tokens x vocabulary) logits never exist; or, for a model whose head could not be split off,
    ``full`` (scored tokens, vocabulary).
    """

    hidden: torch.Tensor | None
    head: nn.Module | None
    full: torch.Tensor | None

    def __len__(self) -> int:
        tensor = self.hidden if self.hidden is not None else self.full
        assert tensor is not None
        return int(tensor.shape[0])

    @property
    def vocabulary(self) -> int:
        """Columns of :meth:`logits`."""
        if self.full is not None:
            return int(self.full.shape[1])
        assert self.head is not None
        weight = getattr(self.head, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim == 2:
            return int(weight.shape[0])
        return int(self.logits(0, 1).shape[-1])

    def logits(self, start: int, stop: int) -> torch.Tensor:
        """Logits of scored tokens ``start:stop``, (stop - start, vocabulary)."""
        if self.full is not None:
            return self.full[start:stop]
        assert self.hidden is not None and self.head is not None
        return self.head(self.hidden[start:stop])


def scored_output(model: nn.Module, batch: WindowBatch) -> ScoredOutput:
    """Run ``model`` over the batch and keep the input of its output layer at the scored positions.

    The output layer (``get_output_embeddings()``) is run by the model on one position per row
    only; those logits are checked against the layer applied to the kept input, so a model that
    post-processes its logits (soft-capping, scaling) is caught and falls back to
    :func:`scored_logits`. Memory: the hidden states (tokens x hidden size) instead of the logits
    (tokens x vocabulary), 85x less on SmolLM2.
    """
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if not isinstance(head, nn.Module):
        return ScoredOutput(None, None, scored_logits(model, batch))
    captured: list[torch.Tensor] = []

    def keep_input(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if len(args) != 1 or not isinstance(args[0], torch.Tensor) or args[0].ndim != 3:
            return None  # an unexpected call: let the layer run as the model asked
        captured.append(args[0])
        return (args[0][:, -1:],)

    device = _device(model)
    handle = head.register_forward_pre_hook(keep_input)
    try:
        outputs = model(input_ids=batch.input_ids.to(device), **_forward_kwargs(model, batch))
    finally:
        handle.remove()
    logits = _logits_of(outputs)
    del outputs
    rows = batch.rows.to(device)
    if not captured:  # the head was not called as expected: the model's logits are complete
        offset = batch.input_ids.shape[1] - logits.shape[1]
        return ScoredOutput(None, None, logits[rows, (batch.positions - offset).to(device)])
    hidden = captured[0]
    if len(captured) == 1 and logits.shape[1] == 1 and torch.equal(head(hidden[:, -1:]), logits):
        offset = batch.input_ids.shape[1] - hidden.shape[1]
        return ScoredOutput(hidden[rows, (batch.positions - offset).to(device)], head, None)
    # The model changes its head's output (soft-capping, scaling): take its own logits instead.
    return ScoredOutput(None, None, scored_logits(model, batch))


def _rows_per_chunk(vocabulary: int) -> int:
    # 2^22 elements (16 MB of float32 logits per model) keep the head's matrix product efficient
    # while holding two chunks is 30x less than one window's logits on a 49k vocabulary.
    return max(1, _CHUNK_ELEMENTS // max(vocabulary, 1))


def row_chunks(teacher: ScoredOutput, student: ScoredOutput) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` row ranges of the scored tokens, sized to bound the logits' memory."""
    if len(student) != len(teacher):
        raise ValueError(
            f"the teacher scored {len(teacher)} tokens and the student {len(student)}: same batch?"
        )
    rows = _rows_per_chunk(max(teacher.vocabulary, student.vocabulary))
    for start in range(0, len(teacher), rows):
        yield start, min(start + rows, len(teacher))


def batch_statistics(
    teacher: nn.Module, student: nn.Module, batch: WindowBatch
) -> Iterator[TokenStatistics]:
    """The per-token statistics of one batch, a chunk of scored positions at a time.

    Only the two models' hidden states and one chunk of each model's logits are alive at once.
    """
    teacher_out = scored_output(teacher, batch)
    student_out = scored_output(student, batch)
    targets = batch.targets
    for start, stop in row_chunks(teacher_out, student_out):
        t = teacher_out.logits(start, stop)
        s = student_out.logits(start, stop).to(t.device)
        yield token_statistics(s, t, targets[start:stop])


def _progress(total: int, enabled: bool, description: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="tok", unit_scale=True, desc=description, disable=not enabled)


def _scored_count(token_ids: Any, config: WindowConfig) -> int:
    return int(_as_token_stream(token_ids, config).numel()) - 1


@torch.inference_mode()
def compare_causal_lms(
    teacher: nn.Module,
    student: nn.Module,
    token_ids: Any,
    config: WindowConfig | None = None,
    *,
    progress: bool = False,
) -> dict[str, Any]:
    """Token-level loyalty of ``student`` to ``teacher`` over ``token_ids`` (one 1-D stream).

    Both models must share the tokenizer and vocabulary. Returns the report of
    :meth:`~loyalkit.metrics.token_loyalty.TokenLoyaltyAccumulator.result`.
    """
    teacher, student = _check_model(teacher, "teacher"), _check_model(student, "student")
    config = config or WindowConfig()
    accumulator = TokenLoyaltyAccumulator()
    with _progress(_scored_count(token_ids, config), progress, "teacher+student") as bar:
        for batch in window_batches(token_ids, config):
            for stats in batch_statistics(teacher.eval(), student.eval(), batch):
                accumulator.update(stats)
            bar.update(int(batch.targets.numel()))
    return accumulator.result()


@dataclass(frozen=True)
class TeacherCache:
    """The teacher's top-k log-probabilities at every scored token of one token stream.

    ``token_ids``: the stream (int32); ``topk_ids`` / ``topk_logprobs``: (scored tokens, k), most
    likely first; ``target_logprobs``: the teacher's log-probability of each reference token. All
    log-probabilities are float32 (computed in float64). Saved as one safetensors file whose
    metadata holds the window settings, so a student is scored on exactly the same windows.
    """

    token_ids: np.ndarray
    window: int
    stride: int
    topk_ids: np.ndarray
    topk_logprobs: np.ndarray
    target_logprobs: np.ndarray

    @property
    def top_k(self) -> int:
        return int(self.topk_ids.shape[1])

    def config(self, batch_size: int = 4) -> WindowConfig:
        """The window settings the cache was built with."""
        return WindowConfig(window=self.window, stride=self.stride, batch_size=batch_size)

    def save(self, path: str | Path) -> Path:
        """Write the cache as safetensors; returns the path."""
        from safetensors.numpy import save_file

        path = Path(path)
        metadata = {
            "format": _CACHE_FORMAT,
            "settings": json.dumps({"window": self.window, "stride": self.stride}),
        }
        tensors = {
            "token_ids": np.ascontiguousarray(self.token_ids, dtype=np.int32),
            "topk_ids": np.ascontiguousarray(self.topk_ids, dtype=np.int32),
            "topk_logprobs": np.ascontiguousarray(self.topk_logprobs, dtype=np.float32),
            "target_logprobs": np.ascontiguousarray(self.target_logprobs, dtype=np.float32),
        }
        save_file(tensors, str(path), metadata=metadata)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TeacherCache:
        """Read a cache written by :meth:`save`, checking its format."""
        from safetensors import safe_open

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"teacher cache {str(path)!r} does not exist")
        try:
            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
                tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
        except Exception as error:  # safetensors raises its own error types
            raise ValueError(
                f"teacher cache {str(path)!r} is not a safetensors file: {error}"
            ) from None
        if metadata.get("format") != _CACHE_FORMAT:
            raise ValueError(
                f"teacher cache {str(path)!r} has format {metadata.get('format')!r}, "
                f"expected {_CACHE_FORMAT!r}: rebuild it with this loyalkit"
            )
        settings = json.loads(metadata["settings"])
        return cls(
            tensors["token_ids"],
            int(settings["window"]),
            int(settings["stride"]),
            tensors["topk_ids"],
            tensors["topk_logprobs"],
            tensors["target_logprobs"],
        )


@torch.inference_mode()
def build_teacher_cache(
    teacher: nn.Module,
    token_ids: Any,
    config: WindowConfig | None = None,
    *,
    top_k: int = 64,
    progress: bool = False,
) -> TeacherCache:
    """Run ``teacher`` once over ``token_ids`` and keep its top-k log-probabilities per token."""
    teacher = _check_model(teacher, "teacher")
    config = config or WindowConfig()
    top_k = _positive_int(top_k, "top_k")
    stream = _as_token_stream(token_ids, config)
    ids, logprobs, targets = [], [], []
    with _progress(stream.numel() - 1, progress, "teacher") as bar:
        for batch in window_batches(stream, config):
            log_p = torch.log_softmax(scored_logits(teacher.eval(), batch).double(), dim=-1)
            if top_k > log_p.shape[1]:
                raise ValueError(f"`top_k` ({top_k}) exceeds the vocabulary ({log_p.shape[1]})")
            values, indices = log_p.topk(top_k, dim=-1)
            ids.append(indices.int().cpu().numpy())
            logprobs.append(values.float().cpu().numpy())
            target = log_p.gather(1, batch.targets[:, None].to(log_p.device)).squeeze(1)
            targets.append(target.float().cpu().numpy())
            bar.update(int(batch.targets.numel()))
    assert config.stride is not None
    return TeacherCache(
        stream.int().numpy(),
        config.window,
        config.stride,
        np.concatenate(ids),
        np.concatenate(logprobs),
        np.concatenate(targets),
    )


@torch.inference_mode()
def compare_with_teacher_cache(
    cache: TeacherCache, student: nn.Module, *, batch_size: int = 4, progress: bool = False
) -> dict[str, Any]:
    """Token-level loyalty of ``student`` against a :class:`TeacherCache` (no teacher pass).

    Label loyalty, delta-p and the perplexity ratio are exact; KL and probability loyalty come from
    the top-k + tail coarse-graining (KL a lower bound, probability loyalty an upper bound).
    """
    student = _check_model(student, "student")
    if not isinstance(cache, TeacherCache):
        raise TypeError(f"`cache` must be a TeacherCache, got {type(cache).__name__}")
    config = cache.config(batch_size)
    accumulator = TokenLoyaltyAccumulator()
    offset = 0
    with _progress(len(cache.target_logprobs), progress, "student") as bar:
        for batch in window_batches(cache.token_ids, config):
            logits = scored_logits(student.eval(), batch)
            stop = offset + int(batch.targets.numel())
            if stop > len(cache.target_logprobs):
                raise ValueError("the teacher cache holds fewer scored tokens than its windows")
            accumulator.update(
                topk_token_statistics(
                    logits,
                    torch.from_numpy(cache.topk_ids[offset:stop]),
                    torch.from_numpy(cache.topk_logprobs[offset:stop]),
                    torch.from_numpy(cache.target_logprobs[offset:stop]),
                    batch.targets,
                )
            )
            bar.update(stop - offset)
            offset = stop
    return accumulator.result()
