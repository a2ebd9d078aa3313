"""MuJoCo PPO benchmark: rlexp's tuned defaults and +experiment=cleanrl_mujoco against CleanRL's published table.

    python experiments/benchmarks/mujoco_table.py run [--configs tuned tuned_32minibatches cleanrl cleanrl_script]
        [--envs hopper ...] [--seeds 0 1 2] [--cleanrl-script PATH --cleanrl-python PATH]
    python experiments/benchmarks/mujoco_table.py report      # -> experiments/results/mujoco.md and mujoco.png

``run`` trains every (config, env, seed) that has no finished run yet, two processes at a time with one
torch thread each, into ``outputs/benchmarks/mujoco/<config>/<env>/seed<k>/``; it can be stopped and
started again. Config ``cleanrl_script`` runs CleanRL's own script unchanged (``--cleanrl-script
<ppo_continuous_action.py> --cleanrl-python <python of its environment>``) for the wall-time
comparison, timed by this script; run it beside an rlexp run so both see the same machine load.
``report`` reads the run folders. The metric is CleanRL's: the mean raw return of the last 100 training
episodes (from the per-iteration means and episode counts in metrics.jsonl), as mean +- std over seeds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUNS = ROOT / "outputs" / "benchmarks" / "mujoco"
RESULTS = ROOT / "experiments" / "results"
ENVS = {"halfcheetah": "HalfCheetah", "hopper": "Hopper", "walker2d": "Walker2d",
        "inverted_pendulum": "InvertedPendulum", "ant": "Ant", "humanoid": "Humanoid", "swimmer": "Swimmer",
        "inverted_double_pendulum": "InvertedDoublePendulum"}  # the last four: not in CleanRL's table
# tuned_32minibatches: conf/tuned/mujoco.yaml before 2026-12-04 (CleanRL's minibatches of 64 and lr), for comparison;
# cleanrl_v4: the preset on the v4 envs CleanRL's table was made on ({Env} is the env's gymnasium name);
# cleanrl_v4_truncation_as_termination: and time limits ending the return, as CleanRL's script does;
# cleanrl_gymnasium029_normalizer: the preset with the normalisation semantics of CleanRL's gymnasium 0.29 wrappers.
CONFIGS = {"tuned": [], "tuned_32minibatches": ["optim.num_minibatches=32", "optim.lr=0.0003"],
           "cleanrl": ["+experiment=cleanrl_mujoco"], "cleanrl_v4": ["+experiment=cleanrl_mujoco", "env.id={Env}-v4"],
           "cleanrl_v4_truncation_as_termination": ["+experiment=cleanrl_mujoco",
                                                    "imports=[experiments.benchmarks.time_limit_terminates]",
                                                    "env.id={Env}TimeLimitTerminates-v4"],
           "cleanrl_gymnasium029_normalizer": ["+experiment=cleanrl_mujoco",
                                               "imports=[experiments.benchmarks.gymnasium029_normalizer]"]}
# CleanRL ppo_continuous_action, 1M steps, 3 seeds, v4 envs: mean and std over seeds of the last 100
# training episodes (vwxyzjn/cleanrl docs/benchmark/ppo_continuous_action.md); its published runtime is 24-26 min.
PUBLISHED = {"halfcheetah": (1442.6, 46.0), "hopper": (2382.9, 271.7), "walker2d": (2288.0, 571.8),
             "inverted_pendulum": (963.1, 22.2)}


def run_one(config: str, env: str, seed: int) -> None:
    folder = RUNS / config / env / f"seed{seed}"
    if (folder / "checkpoint.pt").exists():
        return
    overrides = [override.format(Env=ENVS[env]) for override in CONFIGS[config]]
    command = [sys.executable, "-m", "rlexp", f"env={env}", f"seed={seed}", "logger=csv", *overrides,
               f"hydra.run.dir={folder}"]
    start = time.perf_counter()
    with open(RUNS / f"{config}_{env}_seed{seed}.log", "w") as log:
        result = subprocess.run(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode == 0:
        (folder / "wall_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    print(f"{config} {env} seed {seed}: exit {result.returncode}", flush=True)


def run_cleanrl_script(script: Path, python: Path, env: str, seed: int) -> None:
    folder = RUNS / "cleanrl_script" / env / f"seed{seed}"
    if (folder / "wall_seconds.txt").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(folder / "stdout.log", "w") as log:
        result = subprocess.run([str(python), str(script), f"--env-id={ENVS[env]}-v4", f"--seed={seed}",
                                 "--total-timesteps=1000000"], cwd=folder, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode == 0:
        (folder / "wall_seconds.txt").write_text(f"{time.perf_counter() - start:.1f}\n")
    print(f"cleanrl_script {env} seed {seed}: exit {result.returncode}", flush=True)


def last_episodes_mean(rows: list[dict], episodes: int = 100) -> float:
    """Mean return of the last ``episodes`` training episodes, from per-iteration means and counts."""
    total, count = 0.0, 0
    for row in reversed(rows):
        n = row.get("train/episodes", 0)
        if not n:
            continue
        take = min(n, episodes - count)
        total += row["train/episode_return"] * take
        count += take
        if count == episodes:
            break
    return total / count if count else float("nan")


def script_returns(log: Path) -> list[float]:
    """The training episode returns CleanRL's script prints (``episodic_return=[...]``), in order."""
    return [float(line.split("episodic_return=[")[1].rstrip("]\n")) for line in log.read_text().splitlines()
            if "episodic_return=[" in line]


def read_run(folder: Path) -> dict | None:
    metrics = folder / "metrics.jsonl"
    if not (folder / "checkpoint.pt").exists() or not metrics.exists():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    wall = folder / "wall_seconds.txt"
    curve = [(row["frames"], row["train/episode_return"]) for row in rows if "train/episode_return" in row]
    return {"final": last_episodes_mean(rows), "first": curve[0][1] if curve else float("nan"),
            "eval": rows[-1].get("eval/episode_return", float("nan")),
            "frames": rows[-1]["frames"], "train_seconds": rows[-1]["train/seconds"],
            "wall": float(wall.read_text()) if wall.exists() else float("nan"), "curve": curve}


def read_runs(config: str, env: str) -> list[dict]:
    """The finished runs of ``config`` on ``env``, by seed."""
    return [r for r in (read_run(f) for f in sorted((RUNS / config / env).glob("seed*"))) if r]


def speed(runs: list[dict]) -> str:
    """Two table cells: the median training frames/s and the median wall seconds per run."""
    fps = statistics.median(r["frames"] / r["train_seconds"] for r in runs)
    walls = [r["wall"] for r in runs if r["wall"] == r["wall"]]
    return f"{fps:,.0f} | {statistics.median(walls) if walls else float('nan'):,.0f}"


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:,.1f} (1 seed)"
    return f"{statistics.mean(values):,.1f} +- {statistics.stdev(values):,.1f} ({len(values)} seeds)"


def report(note: str | None = None) -> None:
    lines = ["# MuJoCo: rlexp against CleanRL's published PPO table", "",
             "Written by `python experiments/benchmarks/mujoco_table.py report` from the run folders under "
             "`outputs/benchmarks/mujoco/`.", "Metric: mean raw return of the last 100 training episodes, "
             "mean +- std over seeds (CleanRL's). `tuned`: `python -m rlexp env=<env>` (conf/tuned/); "
             "`tuned_32minibatches`: the same with `optim.num_minibatches=32 optim.lr=0.0003` (the tuned defaults "
             "before 2026-12-04); "
             "`cleanrl`: `+experiment=cleanrl_mujoco`; `cleanrl_v4`: the same with `env.id=<Env>-v4`; "
             "`cleanrl_v4_truncation_as_termination`: and the time limit reported as a termination "
             "(experiments/benchmarks/time_limit_terminates.py); `cleanrl_gymnasium029_normalizer`: "
             "`+experiment=cleanrl_mujoco` normalising as gymnasium 0.29's wrappers in CleanRL's env do "
             "(experiments/benchmarks/gymnasium029_normalizer.py). rlexp runs v5 envs (unless `-v4`) and "
             "bootstraps at time-limit truncations; CleanRL ran v4 and treats truncation as termination.", "",
             "| env | config | last-100 return | CleanRL published | vs published mean | final eval | "
             "frames/s (training) | wall s per run |", "|---|---|---|---|---|---|---|---|"]
    curves = {}
    for env, (mean, std) in PUBLISHED.items():
        for config in [*CONFIGS, "cleanrl_script"]:
            runs = read_runs(config, env)
            if config == "cleanrl_script":
                done = [f for f in sorted((RUNS / config / env).glob("seed*")) if (f / "wall_seconds.txt").exists()]
                if done:
                    walls = [float((f / "wall_seconds.txt").read_text()) for f in done]
                    finals = [statistics.mean(script_returns(f / "stdout.log")[-100:]) for f in done]
                    lines.append(f"| {env} | CleanRL's script, run here | {summary(finals)} | "
                                 f"{mean:,.1f} +- {std:,.1f} "
                                 f"| {statistics.mean(finals) / mean:.2f}x | - | {1e6 / statistics.median(walls):,.0f} "
                                 f"(whole run) | {statistics.median(walls):,.0f} |")
                continue
            if not runs:
                continue
            finals = [r["final"] for r in runs]
            lines.append(f"| {env} | {config} | {summary(finals)} | {mean:,.1f} +- {std:,.1f} | "
                         f"{statistics.mean(finals) / mean:.2f}x | {summary([r['eval'] for r in runs])} | "
                         f"{speed(runs)} |")
            curves[(env, config)] = [r["curve"] for r in runs]
    others = {env: read_runs("tuned", env) for env in ENVS if env not in PUBLISHED}
    others = {env: runs for env, runs in others.items() if runs}
    if others:
        lines += ["", "The other MuJoCo options with their tuned defaults (`python -m rlexp env=<env>`, the shared "
                  "conf/tuned/mujoco.yaml and what conf/tuned/<env>.yaml adds), not in CleanRL's table: the first "
                  "episodes to finish show where the untrained policy starts.", "",
                  "| env | last-100 return | first episodes' return | final eval | frames/s (training) | "
                  "wall s per run |", "|---|---|---|---|---|---|"]
        for env, runs in others.items():
            lines.append(f"| {env} | {summary([r['final'] for r in runs])} | {summary([r['first'] for r in runs])} | "
                         f"{summary([r['eval'] for r in runs])} | {speed(runs)} |")
    if note:
        lines += ["", note]
    (RESULTS / "mujoco.md").write_text("\n".join(lines) + "\n\n![learning curves](mujoco.png)\n")
    plot(curves)
    print("\n".join(lines))


def plot(curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(env for env, _ in curves))
    if not envs:
        return
    fig, axes = plt.subplots(1, len(envs), figsize=(4.5 * len(envs), 3.5), squeeze=False)
    for ax, env in zip(axes[0], envs):
        for color, config in enumerate(CONFIGS):
            for i, curve in enumerate(curves.get((env, config), [])):
                frames, returns = zip(*curve)
                ax.plot(frames, returns, color=f"C{color}", alpha=0.8, label=config if i == 0 else None)
        ax.axhline(PUBLISHED[env][0], color="gray", linestyle="--", label="CleanRL published")
        ax.set_title(env)
        ax.set_xlabel("frames")
        ax.set_ylabel("training episode return")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "mujoco.png", dpi=90)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["run", "report"])
    parser.add_argument("--configs", nargs="+", default=["tuned", "cleanrl"], choices=[*CONFIGS, "cleanrl_script"])
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--note", help="report: a paragraph added under the table (conditions of the runs)")
    parser.add_argument("--cleanrl-script", type=Path)
    parser.add_argument("--cleanrl-python", type=Path)
    args = parser.parse_args()
    if args.action == "report":
        report(args.note)
        return
    RUNS.mkdir(parents=True, exist_ok=True)
    if "cleanrl_script" in args.configs and not (args.cleanrl_script and args.cleanrl_python):
        parser.error("config cleanrl_script needs --cleanrl-script and --cleanrl-python")
    jobs = [(run_cleanrl_script, (args.cleanrl_script, args.cleanrl_python, env, seed))
            if config == "cleanrl_script" else (run_one, (config, env, seed))
            for seed in args.seeds for env in args.envs for config in args.configs]
    with ThreadPoolExecutor(args.parallel) as pool:
        for future in [pool.submit(fn, *job) for fn, job in jobs]:
            future.result()


if __name__ == "__main__":
    main()
