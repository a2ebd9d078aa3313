"""Start-up: launch of ``python -m rlexp env=cartpole`` (W&B offline) to its first training iteration.

    python experiments/benchmarks/startup.py [--before <checkout of an earlier rlexp>] [--rounds 7] [--write]

Runs this checkout ("rlexp"; "after" beside ``--before``), ``--before`` if given, and two floors in rotating
order, ``--rounds`` times each, with the same python (the ``.venv``), one at a time. Measured per run: seconds
from launch until the run's first line of ``metrics.jsonl`` (written at the end of the first iteration, so
this is start-up plus one CartPole iteration) and until the process exits (with one final evaluation and the
W&B finish). The floors are ``python -c "import torch"`` and ``python -c "import tensordict"``: every run
needs tensordict, and importing it imports torch and ``torch._dynamo`` (tensordict.utils does at module
level; torch's optimisers import it too when first built), so no rlexp run can start faster than the second;
the first is what would remain if neither imported dynamo. Printed: medians, per-round ratios, and each
tree's import breakdown from ``python -X importtime`` of the same command (cumulative seconds of the
top-level packages). ``--write`` saves the report to experiments/results/startup.md.
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
# Floors: python importing what every run needs, then exiting. tensordict imports torch and torch._dynamo.
FLOORS = {"import torch": ["-c", "import torch"], "import tensordict": ["-c", "import tensordict"]}
PACKAGES = ("torch", "tensordict", "torch._dynamo", "hydra", "omegaconf", "wandb", "gymnasium", "numpy",
            "rlexp.trainer", "rlexp.__main__")


def child_env(tree: Path, folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return env | {"WANDB_SILENT": "true", "NETRC": str(folder / "no-netrc"), "PYTHONPATH": str(tree),
                  "OMP_NUM_THREADS": "1"}


def launch(tree: Path, folder: Path, importtime: bool = False, command: list[str] | None = None
           ) -> tuple[float, float, str]:
    """Seconds to the first metrics line (or to the exit, if none) and to the exit; the stderr (with
    ``-X importtime``, its report). ``command``: python's arguments instead of the rlexp run."""
    metrics = folder / "run" / "metrics.jsonl"
    command = command or [*COMMAND, f"hydra.run.dir={folder}/run"]
    args = [sys.executable, *(["-X", "importtime"] if importtime else []), *command]
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
    parser.add_argument("--before", type=Path)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    this = "after" if args.before else "rlexp"  # this checkout
    trees = {this: ROOT} | ({"before": args.before.resolve()} if args.before else {})
    names = [*trees, *FLOORS]
    started, load = datetime.datetime.now(), os.getloadavg()
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="rlexp-startup-") as tmp:
        for round_ in range(args.rounds):
            for name in names[round_ % len(names):] + names[:round_ % len(names)]:  # rotate the order
                folder = Path(tmp) / f"{name.replace(' ', '-')}{round_}"
                folder.mkdir()
                first, total, _ = launch(trees.get(name, ROOT), folder, command=FLOORS.get(name))
                runs[name].append((first, total))
                print(f"round {round_} {name:17s}: first iteration {first:5.2f} s, exit {total:5.2f} s", flush=True)
        breakdown = {}
        for name, tree in trees.items():
            folder = Path(tmp) / f"importtime-{name}"
            folder.mkdir()
            breakdown[name] = import_breakdown(launch(tree, folder, importtime=True)[2])

    def ratios(over: str, under: str) -> str:
        values = [a[0] / b[0] for a, b in zip(runs[over], runs[under])]
        return (f"{over}/{under} (first iteration): {', '.join(f'{r:.2f}' for r in values)}; "
                f"median {statistics.median(values):.2f}.")

    lines = ["# Start-up: launch to the first training iteration", "",
             "Written by `experiments/benchmarks/startup.py --write` (its printed output).", "",
             f"- Date: {started:%Y-%m-%d %H:%M}; {os.cpu_count()} CPUs; load average (1 min) at start {load[0]:.1f}, "
             f"at end {os.getloadavg()[0]:.1f}.",
             f"- Command: `python {' '.join(COMMAND)}` (W&B offline: no API key), {args.rounds} rounds, rotating; "
             + (f"before = `{trees['before']}`; " if args.before else "")
             + "floors: python importing torch or tensordict and exiting.", "",
             "| run | median s to first iteration | median s to exit |", "|---|---|---|"]
    for name in names:
        lines.append(f"| {name} | {statistics.median(r[0] for r in runs[name]):.2f} | "
                     f"{statistics.median(r[1] for r in runs[name]):.2f} |")
    lines += ["", "Per-round ratios " + ratios(this, "import tensordict"),
              "", "Per-round ratios " + ratios(this, "import torch")]
    if args.before:
        lines += ["", "Per-round ratios " + ratios(this, "before")]
    lines += ["", "Imports (`-X importtime`, cumulative s, first import of each; one run per tree):", "",
              f"| package | {' | '.join(trees)} |", f"|---{'|---' * len(trees)}|"]
    for package in PACKAGES:
        cells = [f"{breakdown[n][package]:.2f}" if package in breakdown[n] else "not imported" for n in trees]
        lines.append(f"| {package} | {' | '.join(cells)} |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.write:
        (ROOT / "experiments" / "results" / "startup.md").write_text(text)


if __name__ == "__main__":
    main()
