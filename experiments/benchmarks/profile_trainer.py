"""Where a short training run spends its time: cProfile of one run in this process, top entries by cumulative time.

    python experiments/benchmarks/profile_trainer.py                        # CartPole, 32,768 frames
    python experiments/benchmarks/profile_trainer.py policy=gru env=cartpole_masked --top 40
    python experiments/benchmarks/profile_trainer.py --sort tottime         # time inside each function itself
    python experiments/benchmarks/profile_trainer.py --write      # also experiments/results/profile_trainer.md

Positional arguments are Hydra overrides, as for ``python -m rlexp``; the run logs nothing and keeps no
files. Besides the profile it prints the trainer's own per-phase wall times (the ``train/time_*`` metrics
every iteration logs, summed over the run). cProfile adds a cost to every Python call, so code making many
small calls looks slower than it is: compare entries with each other, and take absolute speed from a run
without the profiler.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import sysconfig
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path

import tensordict
import torch

from rlexp.config import ROOT, compose_config
from rlexp.loggers import Logger
from rlexp.trainer import train

RESULTS = ROOT / "experiments" / "results" / "profile_trainer.md"
SHORT_RUN = ["env=cartpole", "logger=none", "collector.total_frames=32768", "eval.interval=32768"]


class PhaseTotals(Logger):
    """Sums the ``train/time_<phase>`` metrics of every logged iteration."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for key, value in metrics.items():
            if key.startswith("train/time_"):
                self.seconds[key] += value


def profile(overrides: list[str], top: int, sort: str) -> str:
    """The report: the run's settings and wall time, its phase totals, then the ``top`` profile entries."""
    cfg = compose_config(*SHORT_RUN, *overrides)
    phases, profiler = PhaseTotals(), cProfile.Profile()
    with tempfile.TemporaryDirectory() as run_dir:
        start = time.perf_counter()
        profiler.enable()
        result = train(cfg, Path(run_dir), make_logger=lambda: phases)
        profiler.disable()
        wall = time.perf_counter() - start

    lines = [f"profile_trainer {' '.join([*SHORT_RUN, *overrides])}",
             f"torch {torch.__version__}, tensordict {tensordict.__version__}, {cfg.threads} torch thread(s); "
             f"{result['frames']:,} frames in {wall:.2f} s under the profiler "
             f"(training {result['train/seconds']:.2f} s, evaluation and set-up excluded)", "",
             "Phase totals (train/time_*, summed over iterations):"]
    lines += [f"  {key:<28}{seconds:8.2f} s  {100 * seconds / wall:5.1f}% of the wall time"
              for key, seconds in phases.seconds.items()]
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats(sort).print_stats(top)
    text = stream.getvalue()
    for prefix in (sysconfig.get_paths()["purelib"], str(ROOT)):  # shorter paths: package/module.py
        text = text.replace(prefix + os.sep, "")
    body = text[text.index("   ncalls"):].rstrip()  # pstats' own header names the temporary files
    return "\n".join([*lines, "", f"Top {top} entries by {sort} time:", body])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run")
    parser.add_argument("--top", type=int, default=30, help="profile entries to print (default 30)")
    parser.add_argument("--sort", choices=["cumulative", "tottime"], default="cumulative")
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args()
    report = profile(args.overrides, args.top, args.sort)
    print(report)
    if args.write:
        command = " ".join(["python experiments/benchmarks/profile_trainer.py", *sys.argv[1:]])
        RESULTS.write_text(
            "# Where rlexp's training time goes\n\n"
            f"Written by `{command}` on {datetime.now():%Y-%m-%d %H:%M}, {os.cpu_count()} CPUs, load average "
            f"{os.getloadavg()[0]:.1f} at the end (a shared machine: timings swing between runs).\n\n"
            f"```text\n{report}\n```\n")
        print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
