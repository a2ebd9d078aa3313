"""One table row per configuration: the estimators of ``stats`` applied to its runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rlexp.compare.runs import Run
from rlexp.compare.stats import bootstrap_ci, first_reached, iqm


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
