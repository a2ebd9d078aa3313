"""Many seeds: ``num_seeds`` in one process against one run per seed through Hydra's joblib launcher.

    python experiments/benchmarks/seeds.py [--config cartpole] [--rounds 3] [--seeds 16] [--overrides ...] [--write]

Per round, in an order that rotates from round to round, on the same machine:

* ``one``   -- ``python -m rlexp num_seeds=16``: one process;
* ``two``   -- two processes side by side, ``num_seeds=8 seed=0`` and ``num_seeds=8 seed=8`` (one per core);
* ``sweep`` -- ``python -m rlexp -m seed=0,...,15 hydra/launcher=joblib hydra.launcher.n_jobs=2``.

Every variant trains the same config (``--config``: ``cartpole`` is ``env=cartpole``, rlexp's default;
``grpo`` is ``loss=grpo env=cartpole``; ``pendulum`` is ``env=pendulum``, the continuous-control default)
with W&B offline, as a user's run would, and is timed from launch until its last process exits. Printed:
wall seconds per variant and round, the per-round ratio sweep / variant, medians, and the share of seeds
whose final evaluation reaches the config's threshold (475 on CartPole, -200 on Pendulum). ``--write``
saves the printed report to experiments/results/seeds_<config>.md (``seeds_<config>_short.md`` when
``--overrides`` shortens the runs).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {"cartpole": (["env=cartpole"], 475.0), "grpo": (["loss=grpo", "env=cartpole"], 475.0),
           "pendulum": (["env=pendulum"], -200.0)}
VARIANTS = ("one", "two", "sweep")


def child_env(folder: Path) -> dict[str, str]:
    """No W&B key or settings from this shell: every run logs offline, as it does on a machine without one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    return env | {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "NETRC": str(folder / "no-netrc"),
                  "PYTHONPATH": str(ROOT)}


def launch(variant: str, overrides: list[str], seeds: int, folder: Path) -> tuple[float, list[float], list[int]]:
    """Run one variant into ``folder``; its wall seconds, the final evaluation return of every seed and the
    exit codes."""
    python = [sys.executable, "-m", "rlexp", *overrides]
    if variant == "one":
        commands = [python + [f"num_seeds={seeds}", "seed=0", f"hydra.run.dir={folder}/run"]]
    elif variant == "two":
        half = seeds // 2
        commands = [python + [f"num_seeds={half}", f"seed={start}", f"hydra.run.dir={folder}/run{start}"]
                    for start in (0, half)]
    else:
        commands = [python[:3] + ["-m", *overrides, "seed=" + ",".join(map(str, range(seeds))),
                                  "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={folder}/sweep"]]
    start = time.perf_counter()
    processes = [subprocess.Popen(command, cwd=folder, env=child_env(folder), stdout=subprocess.DEVNULL,
                                  stderr=open(folder / f"stderr{i}.txt", "w")) for i, command in enumerate(commands)]
    codes = [process.wait() for process in processes]
    wall = time.perf_counter() - start
    returns = [final_eval(path) for path in sorted(folder.rglob("metrics.jsonl"))]
    return wall, returns, codes


def final_eval(path: Path) -> float:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    evals = [row["eval/episode_return"] for row in rows if "eval/episode_return" in row]
    return evals[-1] if evals else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="cartpole")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--overrides", nargs="*", default=[], help="more overrides for every run (a short check)")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    overrides, threshold = CONFIGS[args.config]
    overrides = [*overrides, *args.overrides]
    variants = args.variants.split(",")
    started, load = datetime.datetime.now(), os.getloadavg()
    results: dict[str, list[tuple[float, list[float], list[int]]]] = {v: [] for v in variants}
    lines = []
    with tempfile.TemporaryDirectory(prefix="rlexp-seeds-") as tmp:
        for round_ in range(args.rounds):
            order = variants[round_ % len(variants):] + variants[:round_ % len(variants)]
            for variant in order:
                folder = Path(tmp) / f"{variant}{round_}"
                folder.mkdir()
                wall, returns, codes = launch(variant, overrides, args.seeds, folder)
                results[variant].append((wall, returns, codes))
                reached = sum(r >= threshold for r in returns)
                line = (f"round {round_} {variant:5s}: {wall:7.1f} s, {len(returns)} seeds, {reached} with final eval "
                        f">= {threshold:g}, exit codes {sorted(set(codes))}")
                print(line, flush=True)
                lines.append(line)

    def ratio(variant: str) -> list[float]:
        return [s[0] / v[0] for s, v in zip(results["sweep"], results[variant])]

    report = [f"# Many seeds: num_seeds against a joblib sweep ({args.config})", "",
              "Written by `experiments/benchmarks/seeds.py --write` (its printed output).", "",
              f"- Date: {started:%Y-%m-%d %H:%M}; machine: {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} CPUs; load average (1 min) at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f}.",
              f"- Command: `python experiments/benchmarks/seeds.py {' '.join(sys.argv[1:])}`",
              f"- Config: `python -m rlexp {' '.join(overrides)}` with {args.seeds} seeds per variant.", "",
              "```", *lines, "```", "", "| variant | median wall s | sweep / variant per round | median ratio | "
              f"seeds with final eval >= {threshold:g} (all rounds) |", "|---|---|---|---|---|"]
    for variant in variants:
        walls = [r[0] for r in results[variant]]
        returns = [x for r in results[variant] for x in r[1]]
        ratios = ratio(variant) if "sweep" in results else []
        report.append(f"| {variant} | {statistics.median(walls):.1f} | {', '.join(f'{x:.2f}' for x in ratios)} | "
                      f"{statistics.median(ratios):.2f} | {sum(r >= threshold for r in returns)} of {len(returns)} |")
    text = "\n".join(report)
    print("\n" + text)
    if args.write:
        suffix = "_short" if args.overrides else ""  # a shortened run does not replace the full one
        (ROOT / "experiments" / "results" / f"seeds_{args.config}{suffix}.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
