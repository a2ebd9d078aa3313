"""CartPole speed benchmark: rlexp against a CleanRL ppo.py reference, measured side by side in one run.

Trainers (each run in a fresh subprocess, one after another, never two at once; the order rotates per seed):

* ``cleanrl``        -- experiments/benchmarks/cleanrl_reference.py: CleanRL's ppo.py re-implemented in plain
                        torch, its defaults (4 envs x 128 steps, 4 epochs x 4 minibatches), 1 torch thread,
                        gymnasium ``make_vec`` sync envs with same-step autoreset;
* ``cleanrl_numpy``  -- the same with gymnasium's numpy-vectorised CartPoleVectorEnv (opt-in);
* ``rlexp_cleanrl``  -- ``python -m rlexp +experiment=cleanrl_cartpole logger=csv eval.interval=<frames>``:
                        CleanRL's exact settings from the command line, no evaluation until the end;
* ``rlexp_default``  -- ``python -m rlexp env=cartpole``: rlexp's defaults, W&B offline logging and
                        evaluation on (its own frame budget unless ``--default-frames``);
* ``rlexp_grpo``     -- ``python -m rlexp loss=grpo env=cartpole`` (opt-in), likewise;
* ``rlexp_gru``      -- ``python -m rlexp policy=gru env=cartpole`` (opt-in), likewise.

Per run: training frames/s of the whole loop (every iteration that contains no evaluation, wall clock
between the trainer's per-iteration log lines, so collection, advantages, update, metrics and logging all
count), the first time the criterion is met -- seconds from launch, seconds of training, frames --, total
wall from launch and peak RSS of the trainer process (``wait4``; W&B's separate service process excluded).
Criterion: the rolling mean *training* return over the last ``--window`` finished episodes (whole log
lines, identical code for every trainer) >= 475 for the CleanRL comparison, as the issue's table uses;
for the other rlexp runs the mean *evaluation* return >= 475. rlexp's per-iteration lines are read from its
``metrics.jsonl`` while it runs (polled every 20 ms, so times carry up to ~20 ms of latency).

The cost floor (experiments/benchmarks/cost_floor.py: env stepping + one policy forward per step at the
same number of envs) is measured in every round too, and rlexp's frames/s is reported against it.

Run: ``.venv/bin/python experiments/benchmarks/speed_cartpole.py`` (3 seeds, 76,800 frames = 150 iterations for the CleanRL
comparison: throughput, ~4-5 min) or ``--frames 500000 --stop-when-solved`` for the learning-curve
comparison (~15-25 min); ``--write`` records the printed tables in experiments/results/speed_cartpole.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = ROOT / "experiments" / "results" / "speed_cartpole.md"
PY = sys.executable
TARGET = 475.0
TRAINERS = ("cleanrl", "cleanrl_numpy", "rlexp_cleanrl", "rlexp_default", "rlexp_grpo", "rlexp_gru")
FLOOR_TRAINERS = ("rlexp_cleanrl", "rlexp_default", "cleanrl")  # compared with the MLP cost floor
RLEXP_OVERRIDES = {  # python -m rlexp <overrides>; rlexp_cleanrl also gets its frame budget and one final evaluation
    "rlexp_cleanrl": ["+experiment=cleanrl_cartpole", "logger=csv"],
    "rlexp_default": ["env=cartpole"],
    "rlexp_grpo": ["loss=grpo", "env=cartpole"],
    "rlexp_gru": ["policy=gru", "env=cartpole"],
}


@dataclass
class Line:
    """One per-iteration log line of a trainer, stamped with the wall time it appeared."""

    t: float
    frames: int
    train_seconds: float | None
    ret_mean: float | None
    ret_count: int
    eval_return: float | None


@dataclass
class Run:
    trainer: str
    seed: int
    launch: float
    lines: list[Line] = field(default_factory=list)
    end: float = 0.0
    exit_code: int = 0
    peak_rss_mb: float = 0.0
    num_envs: int | None = None
    frames_per_batch: int | None = None
    epochs: int | None = None
    minibatches: int | None = None
    stopped_early: bool = False

    # ---- derived numbers -----------------------------------------------------------------------
    def loop_fps(self) -> float:
        """Frames/s over consecutive line pairs whose later line holds no evaluation."""
        frames = seconds = 0.0
        for prev, cur in zip(self.lines, self.lines[1:]):
            if cur.eval_return is None:
                frames += cur.frames - prev.frames
                seconds += cur.t - prev.t
        return frames / seconds if seconds else float("nan")

    def solved(self, use_eval: bool, window: int) -> Line | None:
        if use_eval:
            return next((ln for ln in self.lines if ln.eval_return is not None and ln.eval_return >= TARGET), None)
        recent: deque[tuple[float, int]] = deque()
        total = 0
        for ln in self.lines:
            if ln.ret_count:
                recent.append((ln.ret_mean, ln.ret_count))
                total += ln.ret_count
                while recent and total - recent[0][1] >= window:
                    total -= recent.popleft()[1]
            if total >= window and sum(m * c for m, c in recent) / total >= TARGET:
                return ln
        return None

    def train_seconds_at(self, line: Line) -> float:
        return line.train_seconds if line.train_seconds is not None else float("nan")


# ---- launching trainers ---------------------------------------------------------------------------------
def child_env(folder: Path) -> dict[str, str]:
    """This environment without W&B keys or settings, so W&B runs stay offline."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "NETRC": str(folder / "no-netrc")}
    return env


def reap(proc: subprocess.Popen, block: bool = True) -> tuple[int, float] | None:
    """Exit code and peak RSS (MiB) of the child from ``wait4``; None if it still runs (``block=False``)."""
    pid, status, usage = os.wait4(proc.pid, 0 if block else os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def run_reference(seed: int, frames: int, vector: str, folder: Path, stop: bool, window: int) -> Run:
    cmd = [PY, str(HERE / "cleanrl_reference.py"), "--json", "--seed", str(seed), "--total-timesteps", str(frames),
           "--vector", vector]
    run = Run("cleanrl" if vector == "sync" else "cleanrl_numpy", seed, launch=time.time(), num_envs=4,
              frames_per_batch=512, epochs=4, minibatches=4)
    err = (folder / f"{run.trainer}-{seed}.err").open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=child_env(folder), cwd=ROOT)
    start_t = None
    for raw in proc.stdout:
        rec = json.loads(raw)
        if rec["event"] == "start":
            start_t = rec["t"]
        elif rec["event"] == "iteration":
            returns = rec["returns"]
            run.lines.append(Line(rec["t"], rec["frames"], rec["t"] - start_t,
                                  statistics.fmean(returns) if returns else None, len(returns), None))
            if stop and run.solved(False, window) is not None:
                proc.send_signal(signal.SIGTERM)
                run.stopped_early = True
                break
    proc.stdout.close()
    run.exit_code, run.peak_rss_mb = reap(proc)
    run.end = time.time()
    err.close()
    return run


def run_rlexp(trainer: str, seed: int, frames: int | None, folder: Path, stop: bool, window: int) -> Run:
    run_dir = folder / f"{trainer}-{seed}"
    overrides = list(RLEXP_OVERRIDES[trainer])
    if frames:
        overrides.append(f"collector.total_frames={frames}")
    if trainer == "rlexp_cleanrl":
        overrides.append(f"eval.interval={frames}")
    cmd = [PY, "-m", "rlexp", *overrides, f"seed={seed}", f"hydra.run.dir={run_dir}"]
    run = Run(trainer, seed, launch=time.time())
    err = (folder / f"{trainer}-{seed}.err").open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=child_env(folder), cwd=ROOT)
    metrics, buffer, handle = run_dir / "metrics.jsonl", "", None
    use_eval = trainer != "rlexp_cleanrl"

    def read_new(stamp: float) -> None:
        nonlocal buffer, handle
        if handle is None:
            if not metrics.exists():
                return
            handle = metrics.open()
        buffer += handle.read()
        *complete, buffer = buffer.split("\n")
        for raw in complete:
            rec = json.loads(raw)
            run.lines.append(Line(stamp, rec["frames"], rec.get("train/seconds"), rec.get("train/episode_return"),
                                  int(rec.get("train/episodes", 0)), rec.get("eval/episode_return")))

    while (status := reap(proc, block=False)) is None:
        read_new(time.time())
        if stop and not run.stopped_early and run.solved(use_eval, window) is not None:
            proc.send_signal(signal.SIGTERM)  # rlexp finishes its logger and exits
            run.stopped_early = True
        time.sleep(0.02)
    read_new(time.time())
    run.exit_code, run.peak_rss_mb = status
    run.end = time.time()
    err.close()
    if handle is not None:
        handle.close()
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    run.num_envs, run.frames_per_batch = cfg["env"]["num_envs"], cfg["collector"]["frames_per_batch"]
    run.epochs, run.minibatches = cfg["optim"]["ppo_epochs"], cfg["optim"]["num_minibatches"]
    return run


def run_floor(num_envs: list[int], updates: list[tuple[int, int, int]], folder: Path) -> dict:
    cmd = [PY, str(HERE / "cost_floor.py"), "--json", "--num-envs", *map(str, num_envs),
           "--update", *(f"{a}:{b}:{c}" for a, b, c in updates)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=child_env(folder), cwd=ROOT)
    return json.loads(out.stdout)


# ---- reporting ------------------------------------------------------------------------------------------
def med(values) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def fmt(x: float, spec: str = ",.0f") -> str:
    return "-" if x != x else format(x, spec)


def describe(run: Run, window: int) -> dict:
    use_eval = run.trainer.startswith("rlexp") and run.trainer != "rlexp_cleanrl"
    hit = run.solved(use_eval, window)
    return {"fps": run.loop_fps(),
            "wall_475": hit.t - run.launch if hit else float("nan"),
            "train_475": run.train_seconds_at(hit) if hit else float("nan"),
            "frames_475": hit.frames if hit else float("nan"),
            "first_line": run.lines[0].t - run.launch if run.lines else float("nan"),
            "wall": run.end - run.launch, "rss": run.peak_rss_mb,
            "frames": run.lines[-1].frames if run.lines else 0}


def report(runs: list[Run], floors: list[dict], args, started: datetime.datetime, load: tuple) -> str:
    out: list[str] = []
    criterion = {t: "eval return" for t in RLEXP_OVERRIDES if t != "rlexp_cleanrl"}
    out.append("### Runs\n")
    out.append("| trainer | seed | frames/s (loop) | s to 475 from launch | training s to 475 | frames to 475 "
               "| launch to 1st iteration s | wall s | frames run | peak RSS MiB | exit |")
    out.append("|---|---|---|---|---|---|---|---|---|---|---|")
    described = [(run, describe(run, args.window)) for run in runs]
    for run, d in described:
        out.append(f"| {run.trainer} | {run.seed} | {fmt(d['fps'])} | {fmt(d['wall_475'], '.1f')} | "
                   f"{fmt(d['train_475'], '.1f')} | {fmt(d['frames_475'])} | {fmt(d['first_line'], '.1f')} | "
                   f"{d['wall']:.1f} | {d['frames']:,} | {fmt(d['rss'])} | "
                   f"{run.exit_code}{' (stopped at 475)' if run.stopped_early else ''} |")

    out.append("\n### Medians\n")
    out.append("| trainer | criterion | frames/s (loop) | s to 475 from launch | training s to 475 | frames to 475 "
               "| reached 475 | peak RSS MiB |")
    out.append("|---|---|---|---|---|---|---|---|")
    by: dict[str, list[dict]] = {}
    for run, d in described:
        by.setdefault(run.trainer, []).append(d)
    for trainer, ds in by.items():
        reached = sum(d["frames_475"] == d["frames_475"] for d in ds)
        out.append(f"| {trainer} | {criterion.get(trainer, f'rolling train return ({args.window} episodes)')} | "
                   f"{fmt(med(d['fps'] for d in ds))} | {fmt(med(d['wall_475'] for d in ds), '.1f')} | "
                   f"{fmt(med(d['train_475'] for d in ds), '.1f')} | {fmt(med(d['frames_475'] for d in ds))} | "
                   f"{reached}/{len(ds)} | {fmt(med(d['rss'] for d in ds))} |")

    fps = {t: med(d["fps"] for d in ds) for t, ds in by.items()}
    out.append("\n### Ratios\n")
    if "cleanrl" in fps:
        for trainer in ("rlexp_cleanrl", "cleanrl_numpy", "rlexp_default", "rlexp_grpo", "rlexp_gru"):
            if trainer in fps:
                paired = [d["fps"] / r["fps"] for (run, d) in described if run.trainer == trainer
                          for (ref, r) in described if ref.trainer == "cleanrl" and ref.seed == run.seed]
                target = "; target >= 2.0" if trainer == "rlexp_cleanrl" else ""
                out.append(f"- {trainer} / cleanrl frames/s: {fps[trainer] / fps['cleanrl']:.2f} "
                           f"(median of per-seed ratios {med(paired):.2f}{target})")
    for trainer in ("rlexp_grpo", "rlexp_gru"):
        if trainer in fps and "rlexp_default" in fps:
            out.append(f"- {trainer} / rlexp_default (clip_ppo) frames/s: {fps[trainer] / fps['rlexp_default']:.2f}")
    frames_475 = {t: [d["frames_475"] for d in ds] for t, ds in by.items()}
    for trainer in ("rlexp_cleanrl", "cleanrl_numpy"):
        if trainer in frames_475 and "cleanrl" in frames_475:
            out.append(f"- frames to 475, {trainer} vs cleanrl: median {fmt(med(frames_475[trainer]))} vs "
                       f"{fmt(med(frames_475['cleanrl']))} (per seed: {', '.join(map(fmt, frames_475[trainer]))} vs "
                       f"{', '.join(map(fmt, frames_475['cleanrl']))}; '-' = not reached)")
    floor_by_envs: dict[int, list[float]] = {}
    update_by: dict[tuple, list[float]] = {}
    for f in floors:
        for entry in f["floor"]:
            floor_by_envs.setdefault(entry["num_envs"], []).append(entry["fps"])
        for u in f["update"]:
            for key, value in u.items():
                if key.startswith("floor_plus_update_fps@"):
                    update_by.setdefault((u["frames_per_batch"], u["epochs"], u["minibatches"],
                                          int(key.split("@")[1])), []).append(value)
    for trainer in FLOOR_TRAINERS:
        runs_t = [r for r in runs if r.trainer == trainer]
        if not runs_t or trainer not in fps:
            continue
        r0 = runs_t[0]
        floor = med(floor_by_envs.get(r0.num_envs, []))
        with_update = med(update_by.get((r0.frames_per_batch, r0.epochs, r0.minibatches, r0.num_envs), []))
        target = "; target >= 50%" if trainer.startswith("rlexp") else ""
        out.append(f"- {trainer} ({r0.num_envs} envs, {r0.frames_per_batch} frames/iteration, {r0.epochs} epochs x "
                   f"{r0.minibatches} minibatches): {fps[trainer] / floor:.1%} of the cost floor "
                   f"({fmt(floor)} frames/s: env step + one policy forward at {r0.num_envs} envs{target}), "
                   f"{fps[trainer] / with_update:.1%} of floor + lean PPO update ({fmt(with_update)} frames/s)")
    out.append("\n### Cost floor (median over rounds)\n")
    out.append("| envs | floor frames/s | us per step | env us | policy us |")
    out.append("|---|---|---|---|---|")
    for n in sorted(floor_by_envs):
        entries = [e for f in floors for e in f["floor"] if e["num_envs"] == n]
        out.append(f"| {n} | {fmt(med(e['fps'] for e in entries))} | {med(e['us_per_step'] for e in entries):.0f} | "
                   f"{med(e['env_us_per_step'] for e in entries):.0f} | "
                   f"{med(e['policy_us_per_step'] for e in entries):.0f} |")
    out.append("")
    shapes = {(r.frames_per_batch, r.epochs, r.minibatches, r.num_envs) for r in runs}
    for (fpb, ep, mb, n), values in sorted(update_by.items()):
        if (fpb, ep, mb, n) not in shapes:
            continue
        ms = med(u["ms_per_minibatch"] for f in floors for u in f["update"]
                 if (u["frames_per_batch"], u["epochs"], u["minibatches"]) == (fpb, ep, mb))
        out.append(f"- floor + lean PPO update at {n} envs, {fpb} frames/iteration, {ep} epochs x {mb} minibatches "
                   f"({ms:.2f} ms per minibatch): {fmt(med(values))} frames/s")

    header = [f"Date: {started:%Y-%m-%d %H:%M} (local), {time.time() - started.timestamp():.0f} s run.",
              f"Machine: {cpu_name()}, {os.cpu_count()} CPUs; Python {platform.python_version()}, "
              f"{versions()}.",
              f"Load average (1 min) at start {load[0]:.1f}, at end {os.getloadavg()[0]:.1f}: other processes were "
              "running on this shared 2-core machine, so absolute numbers swing; compare medians and the "
              "ratios, which are measured in the same run.",
              f"Command: `{' '.join(shlex.quote(a) for a in [Path(PY).name, *sys.argv])}`"]
    return "\n".join(["\n".join(f"- {h}" for h in header), "", *out])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def versions() -> str:
    from importlib.metadata import version
    return ", ".join(f"{p} {version(p)}" for p in ("torch", "tensordict", "gymnasium", "numpy", "wandb"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--frames", type=int, default=76_800,
                        help="frame budget of the CleanRL comparison (CleanRL's own default: 500000)")
    parser.add_argument("--default-frames", type=int, default=None,
                        help="frame budget of rlexp_default, rlexp_grpo, rlexp_gru (default: their own collector.total_frames)")
    parser.add_argument("--trainers", default="cleanrl,rlexp_cleanrl,rlexp_default",
                        help=f"comma-separated subset of {', '.join(TRAINERS)}")
    parser.add_argument("--window", type=int, default=20, help="episodes in the rolling training return")
    parser.add_argument("--stop-when-solved", action="store_true",
                        help="end each run once its criterion is met (saves time with --frames 500000)")
    parser.add_argument("--write", action="store_true", help=f"write the report to {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args()
    trainers = args.trainers.split(",")
    unknown = set(trainers) - set(TRAINERS)
    if unknown:
        parser.error(f"unknown trainers {sorted(unknown)}; choose from {', '.join(TRAINERS)}")

    started, load = datetime.datetime.now(), os.getloadavg()
    runs: list[Run] = []
    floors: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="speed_cartpole_") as tmp:
        folder = Path(tmp)
        for i, seed in enumerate(range(args.seeds)):
            order = trainers[i % len(trainers):] + trainers[:i % len(trainers)]
            for trainer in order:
                if trainer.startswith("cleanrl"):
                    run = run_reference(seed, args.frames, "sync" if trainer == "cleanrl" else "numpy", folder,
                                        args.stop_when_solved, args.window)
                else:
                    frames = args.frames if trainer == "rlexp_cleanrl" else args.default_frames  # None: own budget
                    run = run_rlexp(trainer, seed, frames, folder, args.stop_when_solved, args.window)
                runs.append(run)
                d = describe(run, args.window)
                print(f"[seed {seed}] {trainer:14s} {fmt(d['fps']):>7} frames/s  475 after "
                      f"{fmt(d['wall_475'], '.1f')} s / {fmt(d['frames_475'])} frames  wall {d['wall']:.1f} s  "
                      f"exit {run.exit_code}", flush=True)
                if run.exit_code not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
                    print((folder / f"{trainer}-{seed}.err").read_text()[-3000:], file=sys.stderr)
            shapes = {(r.num_envs, r.frames_per_batch, r.epochs, r.minibatches) for r in runs if r.trainer in FLOOR_TRAINERS}
            floors.append(run_floor(sorted({s[0] for s in shapes}), sorted({s[1:] for s in shapes}), folder))
            print(f"[seed {seed}] cost floor: " + ", ".join(f"{f['num_envs']} envs {f['fps']:,.0f} frames/s"
                                                           for f in floors[-1]["floor"]), flush=True)
    text = report(runs, floors, args, started, load)
    print("\n" + text)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("# CartPole speed: rlexp vs a CleanRL ppo.py reference\n\n"
                           "Written by `experiments/benchmarks/speed_cartpole.py --write` (its printed output, "
                           "unedited).\n\n" + text + "\n")
        print(f"\nwrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
