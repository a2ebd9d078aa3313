"""Start-up: launch of ``python -m rlexp env=cartpole`` (W&B offline) to its first training iteration.

    python experiments/benchmarks/startup.py --before <checkout of an earlier rlexp> [--pairs 7] [--write]

Runs this checkout ("after") and ``--before`` in alternating order, ``--pairs`` times each, with the same
python (the ``.venv``), one at a time. Measured per run: seconds from launch until the run's first line of
``metrics.jsonl`` (written at the end of the first iteration, so this is start-up plus one CartPole
iteration) and until the process exits (with one final evaluation and the W&B finish). Printed: medians,
per-pair ratios, and each tree's import breakdown from ``python -X importtime`` of the same command
(cumulative seconds of the top-level packages). ``--write`` saves the report to experiments/results/startup.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMAND = ["-m", "rlexp", "env=cartpole", "collector.total_frames=4096", "eval.interval=4096", "eval.episodes=4"]
PACKAGES = ("torch", "tensordict", "torch._dynamo", "hydra", "omegaconf", "wandb", "gymnasium", "numpy",
            "rlexp.trainer", "rlexp.__main__")


def child_env(tree: Path, folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return env | {"WANDB_SILENT": "true", "NETRC": str(folder / "no-netrc"), "PYTHONPATH": str(tree),
                  "OMP_NUM_THREADS": "1"}


def launch(tree: Path, folder: Path, importtime: bool = False) -> tuple[float, float, str]:
    """Seconds to the first metrics line and to the exit; the stderr (with ``-X importtime``, its report)."""
    metrics = folder / "run" / "metrics.jsonl"
    args = [sys.executable, *(["-X", "importtime"] if importtime else []), *COMMAND, f"hydra.run.dir={folder}/run"]
    start = time.perf_counter()
    with open(folder / "stderr.txt", "w") as stderr:
        process = subprocess.Popen(args, cwd=tree, env=child_env(tree, folder), stdout=subprocess.DEVNULL,
                                   stderr=stderr)
        first = None
        while process.poll() is None:
            if first is None and metrics.exists() and metrics.stat().st_size:
                first = time.perf_counter() - start
            time.sleep(0.005)
    total = time.perf_counter() - start
    if process.returncode:
        raise RuntimeError(f"{tree}: exit code {process.returncode}: {(folder / 'stderr.txt').read_text()[-2000:]}")
    return first if first is not None else total, total, (folder / "stderr.txt").read_text()


def import_breakdown(report: str) -> dict[str, float]:
    """Cumulative import seconds of ``PACKAGES`` (each one's first import) from ``-X importtime`` output."""
    seconds = {}
    for line in report.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \| ( *)(\S+)", line)
        if match and match.group(3) in PACKAGES and match.group(3) not in seconds:
            seconds[match.group(3)] = int(match.group(1)) / 1e6
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    parser.add_argument("--pairs", type=int, default=7)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": ROOT}
    started, load = datetime.datetime.now(), os.getloadavg()
    runs: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory(prefix="rlexp-startup-") as tmp:
        for pair in range(args.pairs):
            for name in (("before", "after") if pair % 2 == 0 else ("after", "before")):
                folder = Path(tmp) / f"{name}{pair}"
                folder.mkdir()
                first, total, _ = launch(trees[name], folder)
                runs[name].append((first, total))
                print(f"pair {pair} {name:6s}: first iteration {first:5.2f} s, exit {total:5.2f} s", flush=True)
        breakdown = {}
        for name, tree in trees.items():
            folder = Path(tmp) / f"importtime-{name}"
            folder.mkdir()
            breakdown[name] = import_breakdown(launch(tree, folder, importtime=True)[2])
    ratios = [a[0] / b[0] for a, b in zip(runs["after"], runs["before"])]
    lines = ["# Start-up: launch to the first training iteration", "",
             "Written by `experiments/benchmarks/startup.py --write` (its printed output).", "",
             f"- Date: {started:%Y-%m-%d %H:%M}; {os.cpu_count()} CPUs; load average (1 min) at start {load[0]:.1f}, "
             f"at end {os.getloadavg()[0]:.1f}.",
             f"- Command: `python {' '.join(COMMAND)}` (W&B offline: no API key), {args.pairs} pairs, alternating; "
             f"before = `{trees['before']}`.", "",
             "| tree | median s to first iteration | median s to exit |", "|---|---|---|"]
    for name in ("before", "after"):
        lines.append(f"| {name} | {statistics.median(r[0] for r in runs[name]):.2f} | "
                     f"{statistics.median(r[1] for r in runs[name]):.2f} |")
    lines += ["", f"Per-pair ratio after/before (first iteration): {', '.join(f'{r:.2f}' for r in ratios)}; "
              f"median {statistics.median(ratios):.2f}.", "",
              "Imports (`-X importtime`, cumulative s, first import of each; one run per tree):", "",
              "| package | before | after |", "|---|---|---|"]
    for package in PACKAGES:
        cells = [f"{breakdown[n][package]:.2f}" if package in breakdown[n] else "not imported"
                 for n in ("before", "after")]
        lines.append(f"| {package} | {cells[0]} | {cells[1]} |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.write:
        (ROOT / "experiments" / "results" / "startup.md").write_text(text)


if __name__ == "__main__":
    main()
