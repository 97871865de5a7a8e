"""Token-level loyalty of a causal LM (the student) to its teacher: the one implementation of the math.

At every scored position both models give a next-token distribution over the same vocabulary. Per
token this module computes, over chunks of positions (so memory stays at a few chunks of
``positions x vocabulary``, whatever the corpus size):

- label agreement: the two argmax tokens are equal (llama.cpp's "same top p");
- probability loyalty: ``1 - sqrt(JSD(p_teacher || p_student))``, the Jensen-Shannon distance with the
  natural logarithm, as ``scipy.spatial.distance.jensenshannon`` computes it (Xu et al. 2021);
- ``KL(p_teacher || p_student)`` in nats;
- delta-p: ``p_student(reference token) - p_teacher(reference token)`` (llama.cpp's definition);
- each model's negative log-likelihood of the reference token (for the perplexity ratio).

:class:`TokenLoyaltyAccumulator` sums these as batches arrive. Means, the KL standard error (sample
standard deviation over tokens / sqrt(n), as llama.cpp's ``+/-``), the delta-p RMS and the perplexity
ratio ``exp(mean NLL_student - mean NLL_teacher)`` are exact. KL percentiles are exact too: the
accumulator keeps every token's KL as one float32 (4 bytes per token, bounded by the token count, not
the vocabulary: 4 MB per million tokens) and reads them with ``numpy.percentile`` (linear
interpolation between order statistics).

Precision and speed: the elementwise passes run in the logits' own precision (float32 for a model's
logits, float64 if given float64): float32 halves the memory traffic of these memory-bound passes
and doubles their SIMD width (benchmarks/RESULTS.md has the figures on SmolLM2). The formulas keep
that precision where textbook ones lose it: ``d = log p - log q`` comes from the logits (never the
log of an underflowed probability); KL is ``sum (p d - (p + q) tanh(d / 2))``, since
``q - p = -(p + q) tanh(d / 2)``; JSD is ``sum (p + q) / 2 f`` with
``f = log1p(|tanh(d/2)|) - |d| (1 - |tanh(d/2)|) / 2 >= 0``. Per element the first orders cancel
inside one term, never between two sums of order one, so near-identical rows keep their relative
precision; normalisers are float32 cascade sums taken to float64. Measured on float32 logits
against 50-digit arithmetic (tests/test_token_loyalty.py): probability loyalty within 2e-8, KL
within 3e-4 relative down to KLs of 1e-7.

Example:
    >>> import torch
    >>> teacher = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> student = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    >>> stats = token_statistics(student, teacher, torch.tensor([0, 1]))
    >>> stats.agree.tolist()
    [True, False]
    >>> accumulator = TokenLoyaltyAccumulator()
    >>> accumulator.update(stats)
    >>> result = accumulator.result()
    >>> result["label_loyalty"], result["num_tokens"], round(result["kl_divergence"]["mean"], 4)
    (0.5, 2, 0.2315)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from loyalkit.metrics.inputs import as_labels, as_scores, check_same_length, to_numpy

__all__ = [
    "KL_PERCENTILES",
    "TokenLoyaltyAccumulator",
    "TokenStatistics",
    "token_loyalty",
    "token_statistics",
    "topk_token_statistics",
]

#: The KL percentiles llama.cpp's ``llama-perplexity --kl-divergence`` prints, as (name, percentile).
KL_PERCENTILES: tuple[tuple[str, float], ...] = (
    ("max", 100.0),
    ("99.9%", 99.9),
    ("99%", 99.0),
    ("95%", 95.0),
    ("90%", 90.0),
    ("median", 50.0),
    ("10%", 10.0),
    ("5%", 5.0),
    ("1%", 1.0),
    ("0.1%", 0.1),
    ("min", 0.0),
)

# Elements per temporary: 2**17 (512 KB in float32, two rows of a 49k vocabulary) keeps a chunk's
# few live temporaries near the cache (measured on 49k-vocabulary float32 rows: 2**16 to 2**17
# elements per chunk about 20% faster than 2**18, and than four or eight rows).
_CHUNK_ELEMENTS = 1 << 17


@dataclass(frozen=True)
class TokenStatistics:
    """Per-token values for one batch of scored positions (1-D tensors of equal length)."""

    agree: torch.Tensor
    probability_loyalty: torch.Tensor
    kl: torch.Tensor
    delta_p: torch.Tensor
    nll_teacher: torch.Tensor
    nll_student: torch.Tensor


def _check_logits(logits: Any, name: str) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of logits, got {type(logits).__name__}")
    if logits.ndim != 2:
        raise ValueError(
            f"`{name}` must be 2-D logits of shape (tokens, vocabulary), got shape "
            f"{tuple(logits.shape)}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"`{name}` must hold floating-point logits, got dtype {logits.dtype}")
    return logits


def _check_targets(targets: Any, length: int) -> torch.Tensor:
    if not isinstance(targets, torch.Tensor) or targets.ndim != 1:
        raise ValueError("`targets` (the reference tokens) must be a 1-D integer tensor")
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise TypeError(f"`targets` must hold token ids, got dtype {targets.dtype}")
    if targets.shape[0] != length:
        raise ValueError(
            f"`targets` must have one token per scored position: expected {length}, "
            f"got {targets.shape[0]}"
        )
    return targets.long()


def _rows_per_chunk(vocabulary: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(vocabulary, 1))


def _xlogx_ratio(p: torch.Tensor, log_p: torch.Tensor, log_m: torch.Tensor) -> torch.Tensor:
    # p log(p/m) with 0 log 0 = 0: where p underflows to 0, log_p is finite but p is 0.
    return (p * (log_p - log_m)).sum(dim=-1)


def _safe_log(p: torch.Tensor) -> torch.Tensor:
    # Clamping at the smallest normal double makes p log p exactly 0 for p = 0 without a branch.
    return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))


def _js_loyalty(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    middle = (p + q) * 0.5
    # Logs of the probabilities themselves (not the log-softmax): identical rows give middle == p
    # bit for bit, so their divergence is exactly 0.
    log_m = _safe_log(middle)
    divergence = _xlogx_ratio(p, _safe_log(p), log_m) + _xlogx_ratio(q, _safe_log(q), log_m)
    return 1.0 - torch.sqrt((divergence * 0.5).clamp_min(0.0))


def _argmax(logits: torch.Tensor) -> torch.Tensor:
    # numpy's argmax is vectorised where torch's CPU argmax is not (about 4x faster on a 49k
    # vocabulary, same first-maximum rule); one of the costliest passes otherwise.
    if logits.device.type == "cpu" and not logits.requires_grad:
        return torch.from_numpy(logits.numpy().argmax(axis=1))
    return logits.argmax(dim=-1)


def _softmax(logits: torch.Tensor, top: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities and log-normaliser; the normaliser summed by torch.sum, whose cascade sum
    keeps float32 sums of 49k terms within about 1e-7 (the fused softmax's sum drifted 6e-6)."""
    top_logit = logits.gather(1, top[:, None])
    probabilities = torch.sub(logits, top_logit).exp_()
    total = probabilities.sum(dim=-1, keepdim=True)
    lse = top_logit.squeeze(1).double() + total.squeeze(1).double().log()
    return probabilities.div_(total), lse


def _chunk_statistics(
    t: torch.Tensor, s: torch.Tensor, index_t: torch.Tensor, index_s: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """KL and JSD sums, each model's log-normaliser and probability at the reference token."""
    p, lse_t = _softmax(t, index_t[:, 0])
    q, lse_s = _softmax(s, index_s[:, 0])
    p_at, q_at = p.gather(1, index_t[:, 1:]).squeeze(1), q.gather(1, index_s[:, 1:]).squeeze(1)
    # d = log p - log q from the logits (never the log of an underflowed probability). A rounding
    # of the per-row shift moves d by a constant, which the forms below cancel to first order.
    shift = (lse_t - lse_s).to(t.dtype)
    d = torch.sub(t, s).sub_(shift[:, None])
    half_tanh = torch.mul(d, 0.5).tanh_()  # (p - q) / (p + q), to full relative precision
    w = q.add_(p)  # p + q
    # KL = sum p d + sum (q - p), and q - p = -(p + q) tanh(d / 2): per element the first orders
    # cancel, so near-identical rows keep their relative precision.
    kl = p.mul_(d).addcmul_(w, half_tanh, value=-1.0).sum(dim=-1)
    # JSD = sum (p + q) / 2 f, f = log1p(|tanh(d/2)|) - |d| (1 - |tanh(d/2)|) / 2 >= 0 per element:
    # about d^2 / 8 for small d, log 2 for large |d|.
    magnitude, abs_d = half_tanh.abs_(), d.abs_()
    f = torch.log1p(magnitude)
    f.add_(magnitude.sub_(1.0).mul_(abs_d), alpha=0.5)
    jsd = f.mul_(w).sum(dim=-1) * 0.5
    return kl, jsd, lse_t, lse_s, p_at, q_at


def token_statistics(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor
) -> TokenStatistics:
    """Per-token agreement, probability loyalty, KL, delta-p and NLLs from two models' logits.

    ``student_logits`` and ``teacher_logits``: (tokens, vocabulary); ``targets``: the reference
    token at each position. Computed in the logits' precision (float32 at least), a chunk of
    positions at a time, with formulas whose terms are all of the size of the result (see the
    module docstring); the per-token values come back as float64.
    """
    student_logits = _check_logits(student_logits, "student_logits")
    teacher_logits = _check_logits(teacher_logits, "teacher_logits")
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            "`student_logits` and `teacher_logits` must have the same shape (tokens, vocabulary), "
            f"got {tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}: do the two "
            "models share a vocabulary?"
        )
    targets = _check_targets(targets, student_logits.shape[0]).to(student_logits.device)
    dtype = torch.promote_types(
        torch.promote_types(student_logits.dtype, teacher_logits.dtype), torch.float32
    )
    t, s = teacher_logits.to(dtype), student_logits.to(dtype)
    top_t, top_s = _argmax(t).to(t.device), _argmax(s).to(s.device)
    index_t, index_s = torch.stack([top_t, targets], dim=1), torch.stack([top_s, targets], dim=1)
    pieces: list[tuple[torch.Tensor, ...]] = []
    rows = _rows_per_chunk(t.shape[1])
    for start in range(0, t.shape[0], rows):
        stop = start + rows
        pieces.append(
            _chunk_statistics(
                t[start:stop], s[start:stop], index_t[start:stop], index_s[start:stop]
            )
        )
    if pieces:
        kl, jsd, lse_t, lse_s, p_at, q_at = (
            torch.cat(column).double() for column in zip(*pieces, strict=True)
        )
    else:
        kl = jsd = lse_t = lse_s = p_at = q_at = t.new_zeros(0, dtype=torch.float64)
    target_log_p = t.gather(1, targets[:, None]).squeeze(1).double() - lse_t
    target_log_q = s.gather(1, targets[:, None]).squeeze(1).double() - lse_s
    return TokenStatistics(
        agree=top_t == top_s,
        probability_loyalty=1.0 - jsd.clamp_min(0.0).sqrt(),
        kl=kl,
        delta_p=q_at - p_at,
        nll_teacher=-target_log_p,
        nll_student=-target_log_q,
    )


def topk_token_statistics(
    student_logits: torch.Tensor,
    teacher_topk_ids: torch.Tensor,
    teacher_topk_logprobs: torch.Tensor,
    teacher_target_logprobs: torch.Tensor,
    targets: torch.Tensor,
) -> TokenStatistics:
    """:func:`token_statistics` against a teacher known only by its top-k log-probabilities.

    The teacher's distribution is its k most likely tokens plus one tail bucket holding the rest of
    its mass; the student's is coarse-grained onto the same k + 1 outcomes. Exact: label agreement
    (the teacher's top-1 is ``teacher_topk_ids[:, 0]``), delta-p and both NLLs (the teacher's
    log-probability of the reference token is stored apart). Approximate: KL and JS are those of the
    coarse-grained pair, never larger than the exact ones (data-processing inequality), so KL is a
    lower bound and probability loyalty an upper bound; the gap is the mass the top k miss.
    """
    student_logits = _check_logits(student_logits, "student_logits")
    n = student_logits.shape[0]
    if teacher_topk_ids.ndim != 2 or teacher_topk_ids.shape[0] != n:
        raise ValueError(
            f"`teacher_topk_ids` must be (tokens, k) with {n} tokens, got shape "
            f"{tuple(teacher_topk_ids.shape)}"
        )
    if teacher_topk_logprobs.shape != teacher_topk_ids.shape:
        raise ValueError("`teacher_topk_logprobs` must have the shape of `teacher_topk_ids`")
    targets = _check_targets(targets, n).to(student_logits.device)
    log_p_top = teacher_topk_logprobs.double().to(student_logits.device)
    ids = teacher_topk_ids.long().to(student_logits.device)
    log_q = torch.log_softmax(student_logits.double(), dim=-1)
    log_q_top = log_q.gather(1, ids)
    tail_p = (1.0 - log_p_top.exp().sum(dim=-1)).clamp_min(0.0)
    tail_q = (1.0 - log_q_top.exp().sum(dim=-1)).clamp_min(0.0)
    log_p = torch.cat([log_p_top, _safe_log(tail_p)[:, None]], dim=1)
    log_q_k = torch.cat([log_q_top, _safe_log(tail_q)[:, None]], dim=1)
    p = torch.cat([log_p_top.exp(), tail_p[:, None]], dim=1)
    q = torch.cat([log_q_top.exp(), tail_q[:, None]], dim=1)
    target_p = teacher_target_logprobs.double().to(student_logits.device)
    target_q = log_q.gather(1, targets[:, None]).squeeze(1)
    return TokenStatistics(
        agree=ids[:, 0] == log_q.argmax(dim=-1),
        probability_loyalty=_js_loyalty(p, q),
        kl=_xlogx_ratio(p, log_p, log_q_k),
        delta_p=target_q.exp() - target_p.exp(),
        nll_teacher=-target_p,
        nll_student=-target_q,
    )


@dataclass
class TokenLoyaltyAccumulator:
    """Running sums of :class:`TokenStatistics`; :meth:`result` gives the report.

    Sums are float64 (exact means, standard error and RMS); the per-token KL values are kept as
    float32 for the percentiles (see the module docstring).
    """

    num_tokens: int = 0
    _sums: dict[str, float] = field(default_factory=dict, repr=False)
    # KL mean and sum of squared deviations, merged batch by batch (Chan et al.'s parallel update):
    # no cancellation when the KL values are tiny and alike.
    _kl_mean: float = field(default=0.0, repr=False)
    _kl_m2: float = field(default=0.0, repr=False)
    _kl_values: list[np.ndarray] = field(default_factory=list, repr=False)

    def update(self, stats: TokenStatistics) -> None:
        """Add one batch of per-token statistics."""
        values = {
            "agree": stats.agree.double(),
            "probability_loyalty": stats.probability_loyalty.double(),
            "kl": stats.kl.double(),
            "delta_p": stats.delta_p.double(),
            "nll_teacher": stats.nll_teacher.double(),
            "nll_student": stats.nll_student.double(),
        }
        values["delta_p_squared"] = values["delta_p"] ** 2
        for name, tensor in values.items():
            self._sums[name] = self._sums.get(name, 0.0) + float(tensor.sum())
        count = int(values["kl"].shape[0])
        if count:
            batch_mean = float(values["kl"].mean())
            batch_m2 = float(((values["kl"] - batch_mean) ** 2).sum())
            total = self.num_tokens + count
            delta = batch_mean - self._kl_mean
            self._kl_mean += delta * count / total
            self._kl_m2 += batch_m2 + delta**2 * self.num_tokens * count / total
        self._kl_values.append(stats.kl.detach().float().cpu().numpy())
        self.num_tokens += count

    def kl_values(self) -> np.ndarray:
        """Every token's KL so far, float32, in the order the tokens were added."""
        if not self._kl_values:
            return np.empty(0, dtype=np.float32)
        return np.concatenate(self._kl_values)

    def result(self) -> dict[str, Any]:
        """The report: the JSON keys of ``loyalkit compare lm``."""
        n = self.num_tokens
        if n == 0:
            raise ValueError("no token was scored: the text is shorter than two tokens")
        mean = {name: total / n for name, total in self._sums.items()}
        kl_variance = self._kl_m2 / (n - 1) if n > 1 else 0.0
        percentiles = np.percentile(self.kl_values(), [q for _, q in KL_PERCENTILES])
        return {
            "label_loyalty": mean["agree"],
            "label_loyalty_stderr": math.sqrt(mean["agree"] * (1 - mean["agree"]) / n),
            "probability_loyalty": mean["probability_loyalty"],
            "kl_divergence": {
                "mean": mean["kl"],
                "stderr": math.sqrt(kl_variance / n),
                "percentiles": {
                    name: float(value)
                    for (name, _), value in zip(KL_PERCENTILES, percentiles, strict=True)
                },
            },
            "delta_p": {"mean": mean["delta_p"], "rms": math.sqrt(mean["delta_p_squared"])},
            "ppl_ratio": math.exp(mean["nll_student"] - mean["nll_teacher"]),
            "ppl_teacher": math.exp(mean["nll_teacher"]),
            "ppl_student": math.exp(mean["nll_student"]),
            "num_tokens": n,
        }


_REFERENCE_TOKEN_KEYS = ("delta_p", "ppl_ratio", "ppl_teacher", "ppl_student")


def token_loyalty(predictions: Any, references: Any, *, labels: Any = None) -> dict[str, Any]:
    """The token-level report from per-token logits, checked like the classifier metrics' inputs.

    ``predictions``: the student's logits, one row of vocabulary size per scored position;
    ``references``: the teacher's, same shape; ``labels`` (optional): the reference (next) token at
    each position, which adds delta-p and the perplexity ratio. For corpora too large to hold as
    arrays use :func:`loyalkit.metrics.lm_compare.compare_causal_lms`, which streams.

    Example:
        >>> result = token_loyalty([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
        ...                        [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], labels=[0, 1])
        >>> result["label_loyalty"], round(result["ppl_ratio"], 4)
        (0.5, 1.927)
    """
    student = as_scores(predictions, "predictions", "logits")
    teacher = as_scores(references, "references", "logits")
    check_same_length(student, teacher, ("predictions", "references"))
    if student.shape[1] != teacher.shape[1]:
        raise ValueError(
            "`predictions` (the student's outputs) and `references` (the teacher's outputs) must "
            f"cover the same vocabulary, got {student.shape[1]} and {teacher.shape[1]} columns"
        )
    if labels is None:
        targets = np.zeros(len(student), dtype=np.int64)
    else:
        targets = as_labels(to_numpy(labels, "labels"), "labels", student.shape[1])
        if targets.ndim != 1 or len(targets) != len(student):
            raise ValueError(
                f"`labels` (the reference tokens) must have one token per position: expected "
                f"{len(student)}, got {len(targets)}"
            )
    # Arrow columns from evaluate's cache are read-only; torch wants writable memory.
    student, teacher = (np.require(a, requirements="W") for a in (student, teacher))
    accumulator = TokenLoyaltyAccumulator()
    accumulator.update(
        token_statistics(
            torch.from_numpy(student), torch.from_numpy(teacher), torch.from_numpy(targets)
        )
    )
    result = accumulator.result()
    if labels is None:
        for key in _REFERENCE_TOKEN_KEYS:
            del result[key]
    return result
