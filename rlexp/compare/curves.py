"""Learning curves per configuration: runs aligned on a common x grid, mean and bootstrap band."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rlexp.compare.runs import Run
from rlexp.compare.stats import bootstrap_ci

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
