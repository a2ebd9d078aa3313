"""``python -m rlexp.compare FOLDER...``: print the comparison table; optionally write CSV, Markdown and curves."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rlexp.compare.render import plot_curves, render_markdown, render_text, write_csv
from rlexp.compare.runs import config_labels, load_runs
from rlexp.compare.stats import AXES, group_runs, learning_curve, summarize


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rlexp.compare",
        description="Compare rlexp runs per configuration (overrides minus seed) from their metrics files.")
    parser.add_argument("folders", nargs="+", type=Path, help="sweep or run folders, searched recursively")
    parser.add_argument("--threshold", type=float, help="return threshold for the frames/seconds-to columns")
    parser.add_argument("--x", choices=AXES, default="frames", help="x axis of the curves (time: training seconds)")
    parser.add_argument("--plot", type=Path, metavar="PNG", help="write learning curves to this image file")
    parser.add_argument("--csv", type=Path, metavar="PATH", help="write the table as CSV")
    parser.add_argument("--markdown", nargs="?", const="-", metavar="PATH",
                        help="write the table as Markdown to PATH; alone: print Markdown instead of text")
    args = parser.parse_args(argv)
    if args.markdown not in (None, "-") and Path(args.markdown).is_dir():
        parser.error(f"--markdown {args.markdown} is a folder; put --markdown after the folders or give a file")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    runs, skipped = load_runs(args.folders)
    for run_dir, reason in skipped:
        print(f"rlexp.compare: skipped {run_dir}: {reason}", file=sys.stderr)
    if not runs:
        print(f"rlexp.compare: no runs with evaluations under {' '.join(map(str, args.folders))}", file=sys.stderr)
        return 1
    groups = group_runs(runs)
    for config, group in groups.items():
        seeds = [run.seed for run in group]
        if len(set(seeds)) < len(seeds):
            print(f"rlexp.compare: {','.join(config)} has several runs with the same seed; each counts as a seed",
                  file=sys.stderr)
    summaries = summarize(runs, args.threshold)
    labels, common = config_labels([summary.config for summary in summaries])

    markdown = render_markdown(summaries, labels, common)
    print(markdown if args.markdown == "-" else render_text(summaries, labels, common), end="")
    if args.markdown not in (None, "-"):
        Path(args.markdown).write_text(markdown)
    if args.csv is not None:
        with args.csv.open("w", newline="") as file:
            write_csv(summaries, labels, file)
    if args.plot is not None:
        curves = [learning_curve(group, args.x) for group in groups.values()]
        plot_curves(curves, labels, args.plot, axis=args.x, threshold=args.threshold)
    return 0


if __name__ == "__main__":
    sys.exit(main())
