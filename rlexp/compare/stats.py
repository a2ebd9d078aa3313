"""Estimators across seeds (percentile-bootstrap confidence interval of the mean, IQM, first threshold crossing),
and what the comparison applies them to: one summary row per configuration and its learning curve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rlexp.compare.runs import Run

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


@dataclass(frozen=True)
class Estimate:
    """A mean across seeds with its 95% bootstrap interval (NaN bounds for a single seed)."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class Summary:
    """A configuration's statistics across its seeds.

    ``frames_to_threshold`` and ``seconds_to_threshold`` are medians over all seeds, a seed that never
    reaches the threshold counting as ``inf`` (so they are finite only if more than half reach it); NaN
    and ``reached=None`` without a threshold. ``fps`` is the mean over seeds of frames / training seconds.
    """

    config: tuple[str, ...]
    seeds: int
    final: Estimate
    best: Estimate
    final_iqm: float
    threshold: float | None
    reached: int | None
    frames_to_threshold: float
    seconds_to_threshold: float
    fps: float


def group_runs(runs: Sequence[Run]) -> dict[tuple[str, ...], list[Run]]:
    """Runs by configuration, in order of first appearance."""
    groups: dict[tuple[str, ...], list[Run]] = {}
    for run in runs:
        groups.setdefault(run.config, []).append(run)
    return groups


def summarize(runs: Sequence[Run], threshold: float | None = None) -> list[Summary]:
    """One ``Summary`` per configuration, in order of first appearance."""
    return [summarize_config(config, group, threshold) for config, group in group_runs(runs).items()]


def summarize_config(config: tuple[str, ...], runs: Sequence[Run], threshold: float | None) -> Summary:
    final = np.array([run.eval_returns[-1] for run in runs])
    best = np.array([run.eval_returns.max() for run in runs])
    fps = np.mean(np.divide([run.frames for run in runs], [run.seconds for run in runs]))
    reached, frames_to, seconds_to = None, np.nan, np.nan
    if threshold is not None:
        frames = [first_reached(run.eval_frames, run.eval_returns, threshold) for run in runs]
        seconds = [first_reached(run.eval_seconds, run.eval_returns, threshold) for run in runs]
        reached = int(np.isfinite(frames).sum())
        frames_to, seconds_to = float(np.median(frames)), float(np.median(seconds))
    return Summary(config=config, seeds=len(runs), final=estimate(final), best=estimate(best),
                   final_iqm=iqm(final), threshold=threshold, reached=reached, frames_to_threshold=frames_to,
                   seconds_to_threshold=seconds_to, fps=float(fps))


def estimate(samples: np.ndarray) -> Estimate:
    low, high = bootstrap_ci(samples)
    return Estimate(float(np.mean(samples)), float(low), float(high))


AXES = ("frames", "time")


@dataclass(frozen=True)
class Curve:
    """Mean evaluation return across seeds and its 95% bootstrap band at each ``x``."""

    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray


def learning_curve(runs: Sequence[Run], axis: str = "frames") -> Curve:
    """Align ``runs`` on ``axis`` (frames or training seconds) and average them.

    The grid is every evaluation x of the runs from the latest first evaluation on; each run is linearly
    interpolated between its evaluations and holds its final return after its last one (runs that train
    faster finish earlier in wall time).
    """
    if axis not in AXES:
        raise ValueError(f"axis={axis!r}; choose one of {AXES}")
    xs = [run.eval_frames if axis == "frames" else run.eval_seconds for run in runs]
    grid = np.unique(np.concatenate(xs))
    grid = grid[grid >= max(x[0] for x in xs)]
    values = np.stack([np.interp(grid, x, run.eval_returns) for x, run in zip(xs, runs)])
    low, high = bootstrap_ci(values)
    return Curve(x=grid, mean=values.mean(axis=0), low=low, high=high)
