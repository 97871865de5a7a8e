"""Bootstrap confidence intervals for per-example means, delegated to ``scipy.stats.bootstrap``."""

from __future__ import annotations

import numpy as np
from scipy.stats import bootstrap

BOOTSTRAP_METHODS = ("percentile", "basic", "BCa")

# Resamples are drawn in batches so that one batch holds at most this many values: a million
# examples times a thousand resamples would otherwise need 8 GB at once.
_VALUES_PER_BATCH = 20_000_000


def bootstrap_interval(
    values: np.ndarray,
    *,
    confidence_level: float = 0.95,
    n_resamples: int = 1000,
    method: str = "percentile",
    seed: int | None = None,
) -> tuple[float, float]:
    """Two-sided bootstrap interval for the mean of ``values``.

    ``method="BCa"`` (scipy's default) runs a jackknife whose cost grows with the square of the
    number of examples, so the percentile interval is the default here.

    Example:
        >>> low, high = bootstrap_interval(np.array([0.0, 1.0] * 50), seed=0)
        >>> 0.38 < low < 0.5 < high < 0.62
        True
    """
    if isinstance(confidence_level, bool) or not isinstance(confidence_level, (int, float)):
        raise TypeError(f"`confidence_level` must be a number in (0, 1), got {confidence_level!r}")
    if not 0 < confidence_level < 1:
        raise ValueError(f"`confidence_level` must be in (0, 1), e.g. 0.95; got {confidence_level}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ValueError(f"`n_resamples` must be a positive integer, got {n_resamples!r}")
    if method not in BOOTSTRAP_METHODS:
        raise ValueError(f"`bootstrap_method` must be one of {BOOTSTRAP_METHODS}, got {method!r}")
    values = np.asarray(values, dtype=np.float64)
    if np.all(values == values[0]):
        # Every resample has the same mean; scipy would warn and return NaN for BCa.
        return float(values[0]), float(values[0])
    result = bootstrap(
        (values,),
        np.mean,
        confidence_level=confidence_level,
        n_resamples=n_resamples,
        method=method,
        vectorized=True,
        batch=max(1, _VALUES_PER_BATCH // len(values)),
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return float(interval.low), float(interval.high)
