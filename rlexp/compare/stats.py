"""Estimators across seeds: percentile-bootstrap confidence interval of the mean, IQM, first threshold crossing."""

from __future__ import annotations

import numpy as np

RESAMPLES = 10_000
SEED = 0


def bootstrap_ci(samples: np.ndarray, confidence: float = 0.95, resamples: int = RESAMPLES,
                 seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of the mean over axis 0 (the seeds), per remaining element.

    Each resample draws n seeds with replacement, represented by its multinomial counts; the RNG is
    seeded so the interval is reproducible. Fewer than two seeds give NaN: one seed has no spread.
    """
    samples = np.asarray(samples, dtype=float)
    n = samples.shape[0]
    if n < 2:
        nan = np.full(samples.shape[1:], np.nan)
        return nan, nan.copy()
    counts = np.random.default_rng(seed).multinomial(n, np.full(n, 1.0 / n), size=resamples)
    means = np.tensordot(counts, samples, axes=(1, 0)) / n  # [resamples, ...]
    alpha = (1.0 - confidence) / 2.0
    low, high = np.percentile(means, [100 * alpha, 100 * (1 - alpha)], axis=0)
    return low, high


def iqm(samples: np.ndarray) -> float:
    """Interquartile mean: the mean of the empirical quantile function over [0.25, 0.75].

    Each of the n sorted values covers 1/n of the quantile range; a value straddling a quartile counts
    with the covered fraction (n=3: weights 1/6, 2/3, 1/6; n=5: 0.3, 0.4, 0.3 on the middle three).
    For n divisible by 4 this equals ``scipy.stats.trim_mean(x, 0.25)``.
    """
    x = np.sort(np.asarray(samples, dtype=float))
    edges = np.arange(len(x) + 1) / len(x)
    weights = np.clip(np.minimum(edges[1:], 0.75) - np.maximum(edges[:-1], 0.25), 0.0, None)
    return float(weights @ x / 0.5)


def first_reached(x: np.ndarray, values: np.ndarray, threshold: float) -> float:
    """The first ``x`` at which ``values >= threshold``; ``inf`` if never."""
    hits = np.flatnonzero(np.asarray(values) >= threshold)
    return float(np.asarray(x)[hits[0]]) if hits.size else float("inf")
