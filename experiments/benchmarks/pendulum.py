"""Pendulum-v1 with no override: `python -m rlexp env=pendulum` (and loss=grpo), seeds 0-2, two at a time.

    python experiments/benchmarks/pendulum.py [--losses clip_ppo grpo] [--parallel 2]
                                                  # -> experiments/results/continuous_control.md

Target: the median final evaluation return over seeds 0, 1, 2 is at least -200 within 60 s of training
(``train/seconds``, evaluation excluded). Runs go to outputs/benchmarks/pendulum/<loss>/seed<k>/; a loss left
out of ``--losses`` is reported from its earlier runs there (its wall time is not recorded).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "outputs" / "benchmarks" / "pendulum"
LOSSES = ["clip_ppo", "grpo"]
SEEDS = [0, 1, 2]


def run(loss: str, seed: int) -> dict:
    folder = RUNS / loss / f"seed{seed}"
    shutil.rmtree(folder, ignore_errors=True)  # a run folder holds one run: the earlier one is replaced
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "rlexp", "env=pendulum", f"loss={loss}", f"seed={seed}", "logger=csv",
                    f"hydra.run.dir={folder}"], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"})
    return read(loss, seed, wall=time.perf_counter() - start)


def read(loss: str, seed: int, wall: float | None = None) -> dict:
    """A finished run's final evaluation, frames, training seconds and first evaluation >= -200."""
    rows = [json.loads(line) for line in (RUNS / loss / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()]
    evals = [(row["frames"], row["eval/episode_return"], row["train/seconds"]) for row in rows
             if "eval/episode_return" in row]
    return {"loss": loss, "seed": seed, "final": evals[-1][1], "frames": evals[-1][0], "seconds": evals[-1][2],
            "wall": wall, "first_at_200": next(((f, s) for f, r, s in evals if r >= -200), None)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--losses", nargs="+", choices=LOSSES, default=LOSSES)
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time")
    args = parser.parse_args()
    with ThreadPoolExecutor(args.parallel) as pool:
        ran = dict(zip([(loss, seed) for loss in args.losses for seed in SEEDS],
                       pool.map(lambda job: run(*job), [(loss, seed) for loss in args.losses for seed in SEEDS])))
    results = [ran.get((loss, seed)) or read(loss, seed) for loss in LOSSES for seed in SEEDS]
    lines = ["# Pendulum-v1 with the tuned defaults", "",
             f"`python experiments/benchmarks/pendulum.py`, {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, "
             f"{os.cpu_count()} cores, {args.parallel} run(s) at a time with one torch thread each (losses run now: "
             f"{', '.join(args.losses)}; the others from their earlier runs). Each run: `python -m rlexp "
             "env=pendulum [loss=grpo] seed=<k>` with no other override (conf/tuned/pendulum.yaml). Final eval: "
             "mean over the run's evaluation episodes, deterministic policy.", "",
             "| loss | seed | final eval return | frames | training s | wall s | first eval >= -200 (frames, s) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        first = f"{r['first_at_200'][0]:,} / {r['first_at_200'][1]:.1f}" if r["first_at_200"] else "never"
        wall = f"{r['wall']:.1f}" if r["wall"] is not None else "-"
        lines.append(f"| {r['loss']} | {r['seed']} | {r['final']:.1f} | {r['frames']:,} | {r['seconds']:.1f} | "
                     f"{wall} | {first} |")
    lines.append("")
    for loss in LOSSES:
        mine = [r for r in results if r["loss"] == loss]
        median = statistics.median(r["final"] for r in mine)
        seconds = statistics.median(r["seconds"] for r in mine)
        if loss == "clip_ppo":  # the default loss carries the target; GRPO's result is reported
            verdict = (f" (target >= -200: {'met' if median >= -200 else 'NOT met'}; target <= 60 s: "
                       f"{'met' if seconds <= 60 else 'NOT met'})")
        else:
            verdict = " (reported; no target)"
        lines.append(f"- {loss}: median final eval {median:.1f}, median training time {seconds:.1f} s{verdict}")
    text = "\n".join(lines) + "\n"
    (ROOT / "experiments" / "results" / "continuous_control.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
