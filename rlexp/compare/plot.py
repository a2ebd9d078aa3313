"""Learning-curve figure: mean and 95% bootstrap band per configuration, drawn with matplotlib's Agg canvas."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rlexp.compare.curves import Curve

X_LABELS = {"frames": "frames", "time": "training wall time (s)"}


def plot_curves(curves: Sequence[Curve], labels: Sequence[str], path: str | Path, axis: str = "frames",
                threshold: float | None = None) -> None:
    """Write the figure to ``path`` (format from its suffix). matplotlib is imported only here."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import EngFormatter

    figure = Figure(figsize=(7.0, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    for curve, label in zip(curves, labels):
        (line,) = ax.plot(curve.x, curve.mean, label=label, linewidth=1.5)
        ax.fill_between(curve.x, curve.low, curve.high, color=line.get_color(), alpha=0.2, linewidth=0)
    if threshold is not None:
        ax.axhline(threshold, color="0.4", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    ax.set_xlabel(X_LABELS[axis])
    if axis == "frames":
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 200k, 1M
    ax.set_ylabel("evaluation return")
    ax.set_title("mean and 95% bootstrap CI over seeds", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.savefig(path)
