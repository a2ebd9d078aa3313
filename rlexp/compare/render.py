"""Rendering the comparison: the per-configuration table as aligned text, Markdown and CSV, and the learning-curve
figure (mean and 95% bootstrap band per configuration, drawn with matplotlib's Agg canvas)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from rlexp.compare.stats import Curve, Estimate, Summary

CSV_COLUMNS = ("config", "overrides", "seeds", "final_mean", "final_ci_low", "final_ci_high", "best_mean",
               "best_ci_low", "best_ci_high", "final_iqm", "threshold", "reached", "frames_to_threshold",
               "seconds_to_threshold", "fps")


def table_cells(summaries: Sequence[Summary], labels: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted rows; threshold columns only when a threshold was given."""
    threshold = summaries[0].threshold if summaries else None
    headers = ["config", "seeds", "final return [95% CI]", "best return [95% CI]", "final IQM"]
    if threshold is not None:
        headers += [f"reached {threshold:g}", f"frames to {threshold:g}", f"seconds to {threshold:g}"]
    headers.append("FPS")
    rows = []
    for summary, label in zip(summaries, labels):
        row = [label, str(summary.seeds), format_estimate(summary.final), format_estimate(summary.best),
               f"{summary.final_iqm:.1f}"]
        if threshold is not None:
            row += [f"{summary.reached}/{summary.seeds}", format_number(summary.frames_to_threshold, ",.0f"),
                    format_number(summary.seconds_to_threshold, ".1f")]
        row.append(format_number(summary.fps, ",.0f"))
        rows.append(row)
    return headers, rows


def caption(common: Sequence[str], threshold: float | None) -> list[str]:
    """What the columns mean, and the overrides every configuration shares."""
    lines = [f"All runs: {' '.join(common)}"] if common else []
    lines.append("Returns: mean over seeds [95% percentile-bootstrap CI]; IQM: interquartile mean of final returns.")
    if threshold is not None:
        lines.append(f"Frames/seconds to {threshold:g}: median over seeds of the first evaluation reaching it, "
                     "'-' when fewer than half do; seconds are training wall time without evaluation.")
    return lines


def render_text(summaries: Sequence[Summary], labels: Sequence[str], common: Sequence[str] = ()) -> str:
    headers, rows = table_cells(summaries, labels)
    widths = [max(map(len, column)) for column in zip(headers, *rows)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(cells, widths)))

    table = [line(headers), "  ".join("-" * w for w in widths), *map(line, rows)]
    return "\n".join([*caption(common, summaries[0].threshold if summaries else None), "", *table]) + "\n"


def render_markdown(summaries: Sequence[Summary], labels: Sequence[str], common: Sequence[str] = ()) -> str:
    headers, rows = table_cells(summaries, labels)
    table = ["| " + " | ".join(headers) + " |", "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|"]
    table += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join([*table, "", *caption(common, summaries[0].threshold if summaries else None)]) + "\n"


def write_csv(summaries: Sequence[Summary], labels: Sequence[str], file: TextIO) -> None:
    """One row per configuration with unrounded numbers (``inf``: median not reached, empty: not applicable)."""
    writer = csv.writer(file)
    writer.writerow(CSV_COLUMNS)
    for summary, label in zip(summaries, labels):
        writer.writerow([label, ",".join(summary.config), summary.seeds, *estimate_fields(summary.final),
                         *estimate_fields(summary.best), summary.final_iqm, optional(summary.threshold),
                         optional(summary.reached), optional(summary.frames_to_threshold),
                         optional(summary.seconds_to_threshold), summary.fps])


def format_estimate(estimate: Estimate) -> str:
    if math.isnan(estimate.low):
        return f"{estimate.mean:.1f}"
    return f"{estimate.mean:.1f} [{estimate.low:.1f}, {estimate.high:.1f}]"


def format_number(value: float, spec: str) -> str:
    return "-" if math.isinf(value) else format(value, spec)


def estimate_fields(estimate: Estimate) -> tuple[float | str, ...]:
    return estimate.mean, optional(estimate.low), optional(estimate.high)


def optional(value: float | int | None) -> float | int | str:
    """Empty CSV cell for None and NaN."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value


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
