"""CartPole speed benchmark: rlexp against CleanRL, torchrl and Stable-Baselines3, measured side by side in one run.

Trainers (each run in a fresh subprocess, one after another, never two at once; the order rotates per seed, so
rlexp and its peers are interleaved):

* ``cleanrl``         -- experiments/benchmarks/cleanrl_reference.py: CleanRL's ppo.py re-implemented in plain
                         torch, its defaults (4 envs x 128 steps, 4 epochs x 4 minibatches), 1 torch thread,
                         gymnasium ``make_vec`` sync envs with same-step autoreset;
* ``cleanrl_numpy``   -- the same with gymnasium's numpy-vectorised CartPoleVectorEnv (opt-in);
* ``cleanrl_script``  -- CleanRL's own ``cleanrl/ppo.py`` (not pip-installable, so not in this repository), run
                         unchanged in the peer environment with 1 torch thread (``OMP_NUM_THREADS=1``) when its
                         path is given with ``--cleanrl-script PATH``; its stdout is parsed: ``episodic_return``
                         lines are episodes, each ``SPS:`` line ends an iteration of 512 frames (its defaults);
* ``torchrl_cleanrl`` -- experiments/benchmarks/peers/torchrl_cleanrl_cartpole.py: torchrl 0.14's PPO with
                         CleanRL's settings (peer environment);
* ``sb3_zoo``         -- experiments/benchmarks/peers/sb3_zoo_cartpole.py: Stable-Baselines3 2.9 PPO with RL Zoo's
                         tuned CartPole-v1 hyperparameters, its own budget ``--sb3-frames`` (the Zoo's 1e5, over
                         which its linear schedules anneal; peer environment);
* ``rlexp_cleanrl``   -- ``python -m rlexp +experiment=cleanrl_cartpole logger=csv eval.interval=<frames>``:
                         CleanRL's exact settings from the command line, no evaluation until the end;
* ``rlexp_default``   -- ``python -m rlexp env=cartpole``: rlexp's defaults, W&B offline logging and
                         evaluation on (its own frame budget unless ``--default-frames``);
* ``rlexp_grpo``      -- ``python -m rlexp loss=grpo env=cartpole`` (opt-in), likewise;
* ``rlexp_gru``       -- ``python -m rlexp policy=gru env=cartpole`` (opt-in), likewise.

Peer environment. The peers need other packages than rlexp (CleanRL's ppo.py needs gymnasium 0.29), so they run
in their own venv, by default ``.venv-peers`` at the repository root (``--peers-python`` to change)::

    python3 -m venv .venv-peers && .venv-peers/bin/pip install -r experiments/benchmarks/peers/requirements.txt

CleanRL's script: save ``cleanrl/ppo.py`` from CleanRL's repository anywhere outside this one and pass its path
with ``--cleanrl-script``; it runs in a temporary folder (its TensorBoard ``runs/`` lands there).

Per run: training frames/s of the whole loop (every iteration that contains no evaluation, wall clock
between the trainer's per-iteration log lines, so collection, advantages, update, metrics and logging all
count), the first time the criterion is met -- seconds from launch, seconds of training, frames --, total
wall from launch and peak RSS of the trainer process (``wait4``; W&B's separate service process excluded).
Criterion: the rolling mean *training* return over the last ``--window`` finished episodes (whole log
lines, identical code for every trainer) >= 475 for rlexp_cleanrl and every peer, as the issue's table uses;
for the other rlexp runs the mean *evaluation* return >= 475. rlexp's per-iteration lines are read from its
``metrics.jsonl`` while it runs (polled every 20 ms, so times carry up to ~20 ms of latency); the JSON lines of
cleanrl, torchrl_cleanrl and sb3_zoo carry their own wall time; cleanrl_script's lines are stamped when they
reach this process (its stdout unbuffered), and its "training s" are estimated from its first ``SPS`` line
(it prints no start time).

The cost floor (experiments/benchmarks/cost_floor.py: env stepping + one policy forward per step at the
same number of envs) is measured in every round too, and rlexp's frames/s is reported against it.

Run (``.venv/bin/python experiments/benchmarks/speed_cartpole.py ...``):

* default: 3 seeds, 76,800 frames = 150 iterations for the CleanRL comparison (throughput), trainers
  cleanrl, rlexp_cleanrl, rlexp_default, torchrl_cleanrl, sb3_zoo, ~5-7 min;
* ``--frames 500000 --stop-when-solved --cleanrl-script /path/to/cleanrl/ppo.py``: the learning-curve
  comparison with the real CleanRL too (~20-30 min);
* ``--write`` records the printed tables in experiments/benchmarks/speed_cartpole.md and the plot (median
  frames/s per trainer; rolling training return against seconds from launch) in speed_cartpole.png beside it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
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
RESULTS = HERE / "speed_cartpole.md"
PLOT = HERE / "speed_cartpole.png"
PEERS = HERE / "peers"
PEERS_INSTALL = "python3 -m venv .venv-peers && .venv-peers/bin/pip install -r experiments/benchmarks/peers/requirements.txt"
PY = sys.executable
TARGET = 475.0
TRAINERS = ("cleanrl", "cleanrl_numpy", "cleanrl_script", "torchrl_cleanrl", "sb3_zoo", "rlexp_cleanrl",
            "rlexp_default", "rlexp_grpo", "rlexp_gru")
PEER_TRAINERS = ("cleanrl_script", "torchrl_cleanrl", "sb3_zoo")  # run with --peers-python
COMPARED = ("cleanrl_script", "cleanrl", "torchrl_cleanrl", "sb3_zoo")  # the peers rlexp is compared with
PEER_SHAPES = {  # num_envs, frames per iteration, epochs, minibatches (the settings each peer script uses)
    "cleanrl_script": (4, 512, 4, 4), "torchrl_cleanrl": (4, 512, 4, 4), "sb3_zoo": (8, 256, 20, 1)}
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

    def rolling_returns(self, window: int):
        """(line, mean training return of the last >= ``window`` episodes in whole lines, or None before that)."""
        recent: deque[tuple[float, int]] = deque()
        total = 0
        for ln in self.lines:
            if ln.ret_count:
                recent.append((ln.ret_mean, ln.ret_count))
                total += ln.ret_count
                while recent and total - recent[0][1] >= window:
                    total -= recent.popleft()[1]
            yield ln, (sum(m * c for m, c in recent) / total if total >= window else None)

    def solved(self, use_eval: bool, window: int) -> Line | None:
        if use_eval:
            return next((ln for ln in self.lines if ln.eval_return is not None and ln.eval_return >= TARGET), None)
        return next((ln for ln, mean in self.rolling_returns(window) if mean is not None and mean >= TARGET), None)

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


def run_streamed(run: Run, cmd: list[str], folder: Path, parse, stop: bool, window: int,
                 env: dict[str, str] | None = None, cwd: Path = ROOT) -> Run:
    """Run a trainer that reports on stdout; ``parse(raw_line, run)`` appends its iteration lines to ``run``."""
    err = (folder / f"{run.trainer}-{run.seed}.err").open("w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env or child_env(folder),
                            cwd=cwd)
    for raw in proc.stdout:
        parse(raw, run)
        if stop and run.solved(False, window) is not None:
            proc.send_signal(signal.SIGTERM)
            run.stopped_early = True
            break
    proc.stdout.close()
    run.exit_code, run.peak_rss_mb = reap(proc)
    run.end = time.time()
    err.close()
    return run


def json_lines():
    """Parser of the JSON-per-iteration protocol of cleanrl_reference.py --json and the peer scripts."""
    start_t = None

    def parse(raw: str, run: Run) -> None:
        nonlocal start_t
        if not raw.startswith("{"):  # a library's own log line (torchrl logs INFO to stdout)
            return
        rec = json.loads(raw)
        if rec["event"] == "start":
            start_t = rec["t"]
        elif rec["event"] == "iteration":
            returns = rec["returns"]
            run.lines.append(Line(rec["t"], rec["frames"], rec["t"] - start_t,
                                  statistics.fmean(returns) if returns else None, len(returns), None))
    return parse


CLEANRL_EPISODE = re.compile(r"global_step=(\d+), episodic_return=\[?\s*([-+\d.eE]+)")
CLEANRL_SPS = re.compile(r"^SPS:\s*(\d+)")


def cleanrl_script_lines(frames_per_iteration: int):
    """Parser of CleanRL ppo.py's stdout: episode lines collect returns, each ``SPS:`` line ends an iteration.

    It prints no start time; the loop start is estimated from the first SPS line (frames / SPS before it)."""
    returns: list[float] = []
    start_t = None

    def parse(raw: str, run: Run) -> None:
        nonlocal start_t
        now = time.time()
        if m := CLEANRL_EPISODE.search(raw):
            returns.append(float(m[2]))
        elif m := CLEANRL_SPS.search(raw):
            frames = (len(run.lines) + 1) * frames_per_iteration
            if start_t is None:
                start_t = now - frames / max(int(m[1]), 1)
            run.lines.append(Line(now, frames, now - start_t, statistics.fmean(returns) if returns else None,
                                  len(returns), None))
            returns.clear()
    return parse


def run_reference(seed: int, frames: int, vector: str, folder: Path, stop: bool, window: int) -> Run:
    cmd = [PY, str(HERE / "cleanrl_reference.py"), "--json", "--seed", str(seed), "--total-timesteps", str(frames),
           "--vector", vector]
    run = Run("cleanrl" if vector == "sync" else "cleanrl_numpy", seed, launch=time.time(), num_envs=4,
              frames_per_batch=512, epochs=4, minibatches=4)
    return run_streamed(run, cmd, folder, json_lines(), stop, window)


def run_peer(trainer: str, seed: int, frames: int, folder: Path, stop: bool, window: int, peers_py: Path,
             cleanrl_script: Path | None) -> Run:
    """A peer trainer in the peer environment; CleanRL's script runs in its own folder with 1 torch thread."""
    shape = PEER_SHAPES[trainer]
    env, cwd, parse = child_env(folder), ROOT, json_lines()
    if trainer == "cleanrl_script":
        cmd = [str(peers_py), str(cleanrl_script), "--seed", str(seed), "--total-timesteps", str(frames)]
        env |= {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        cwd = folder / f"{trainer}-{seed}"
        cwd.mkdir()
        parse = cleanrl_script_lines(shape[1])
    else:
        cmd = [str(peers_py), str(PEERS / f"{trainer}_cartpole.py"), "--seed", str(seed),
               "--total-frames", str(frames)]
    run = Run(trainer, seed, launch=time.time(), num_envs=shape[0], frames_per_batch=shape[1], epochs=shape[2],
              minibatches=shape[3])
    return run_streamed(run, cmd, folder, parse, stop, window, env=env, cwd=cwd)


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


def paired_ratios(ours: str, peer: str, described: list[tuple[Run, dict]], key: str) -> list[float]:
    """ours / peer of ``key`` for every seed both ran (nan where either did not reach 475)."""
    return [d[key] / r[key] for run, d in described if run.trainer == ours
            for ref, r in described if ref.trainer == peer and ref.seed == run.seed]


def peer_ratio(ours: str, peer: str, described: list[tuple[Run, dict]], ours_criterion: str | None) -> str:
    """One ratio line: frames/s, seconds to 475 from launch and frames to 475 of ``ours`` against ``peer``."""
    parts = []
    for key, name, spec in (("fps", "frames/s", ",.0f"), ("wall_475", "s to 475 from launch", ".1f"),
                            ("frames_475", "frames to 475", ",.0f")):
        a = med(d[key] for run, d in described if run.trainer == ours)
        b = med(d[key] for run, d in described if run.trainer == peer)
        ratio = f"{a / b:.2f}" if a == a and b == b else "-"
        per_seed = paired_ratios(ours, peer, described, key)
        seeds = f" (per seed {', '.join(fmt(x, '.2f') for x in per_seed)})" if any(x == x for x in per_seed) else ""
        parts.append(f"{name} {fmt(a, spec)} vs {fmt(b, spec)}: {ratio}{seeds}")
    target = "; frames/s target >= 2.0" if (ours, peer) == ("rlexp_cleanrl", "cleanrl") else ""
    note = f"; {ours} criterion: {ours_criterion}" if ours_criterion else ""
    return f"- {ours} / {peer}: " + "; ".join(parts) + target + note


def report(runs: list[Run], floors: list[dict], args, started: datetime.datetime, load: tuple,
           peer_versions: str | None) -> str:
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
    out.append("rlexp / peer: above 1 is faster for frames/s, below 1 is faster for seconds and frames to 475. "
               "Per-seed ratios pair the runs of the same seed (same round).\n")
    for ours in ("rlexp_cleanrl", "rlexp_default"):
        for peer in COMPARED:
            if ours in by and peer in by:
                out.append(peer_ratio(ours, peer, described, criterion.get(ours)))
    if "cleanrl" in fps:
        for trainer in ("cleanrl_numpy", "rlexp_grpo", "rlexp_gru"):
            if trainer in fps:
                out.append(f"- {trainer} / cleanrl frames/s: {fps[trainer] / fps['cleanrl']:.2f} "
                           f"(median of per-seed ratios {med(paired_ratios(trainer, 'cleanrl', described, 'fps')):.2f})")
    for trainer in ("rlexp_grpo", "rlexp_gru"):
        if trainer in fps and "rlexp_default" in fps:
            out.append(f"- {trainer} / rlexp_default (clip_ppo) frames/s: {fps[trainer] / fps['rlexp_default']:.2f}")
    frames_475 = {t: [d["frames_475"] for d in ds] for t, ds in by.items()}
    if "cleanrl_numpy" in frames_475 and "cleanrl" in frames_475:
        out.append(f"- frames to 475, cleanrl_numpy vs cleanrl: median {fmt(med(frames_475['cleanrl_numpy']))} vs "
                   f"{fmt(med(frames_475['cleanrl']))} (per seed: {', '.join(map(fmt, frames_475['cleanrl_numpy']))} "
                   f"vs {', '.join(map(fmt, frames_475['cleanrl']))}; '-' = not reached)")
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
              f"{versions()}" + (f"; peers (.venv-peers): {peer_versions}" if peer_versions else "") + ".",
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


def peer_versions(peers_py: Path) -> str:
    """Versions of the main packages in the peer environment."""
    code = ("from importlib.metadata import PackageNotFoundError, version\n"
            "def v(p):\n"
            "    try:\n        return version(p)\n    except PackageNotFoundError:\n        return 'not installed'\n"
            "print(', '.join(f'{p} {v(p)}' for p in ('torch', 'stable-baselines3', 'torchrl', 'tensordict',"
            " 'gymnasium', 'numpy')))")
    return subprocess.run([str(peers_py), "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def launch(trainer: str, seed: int, args, folder: Path) -> Run:
    """One run of ``trainer``; each kind of trainer gets its own frame budget (see the options)."""
    stop, window = args.stop_when_solved, args.window
    if trainer in PEER_TRAINERS:
        frames = args.sb3_frames if trainer == "sb3_zoo" else args.frames
        return run_peer(trainer, seed, frames, folder, stop, window, args.peers_python, args.cleanrl_script)
    if trainer.startswith("cleanrl"):
        return run_reference(seed, args.frames, "sync" if trainer == "cleanrl" else "numpy", folder, stop, window)
    frames = args.frames if trainer == "rlexp_cleanrl" else args.default_frames  # None: own budget
    return run_rlexp(trainer, seed, frames, folder, stop, window)


# ---- plot -------------------------------------------------------------------------------------------------
def plot(runs: list[Run], window: int, path: Path) -> None:
    """Left: median loop frames/s per trainer (bars) with each seed's value (dots); right: rolling training
    return against seconds from launch, one line per run, coloured by trainer, and the 475 target."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    trainers = list(dict.fromkeys(r.trainer for r in runs))
    colours = {t: plt.get_cmap("tab10")(i % 10) for i, t in enumerate(trainers)}
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1, 1.4]})
    for i, trainer in enumerate(trainers):
        values = [r.loop_fps() for r in runs if r.trainer == trainer]
        left.bar(i, med(values), color=colours[trainer], alpha=0.6)
        left.scatter([i] * len(values), values, color="black", s=14, zorder=3)
    left.set_xticks(range(len(trainers)), trainers, rotation=30, ha="right")
    left.set_ylabel("training frames/s (loop)")
    left.yaxis.set_major_formatter(matplotlib.ticker.StrMethodFormatter("{x:,.0f}"))
    left.set_title("Throughput: median (bar) and per seed (dots)")
    labelled: set[str] = set()
    for run in runs:
        points = [(ln.t - run.launch, mean) for ln, mean in run.rolling_returns(window) if mean is not None]
        if points:
            xs, ys = zip(*points)
            right.plot(xs, ys, color=colours[run.trainer], lw=1.2, alpha=0.8,
                       label=None if run.trainer in labelled else run.trainer)
            labelled.add(run.trainer)
    right.axhline(TARGET, color="grey", ls="--", lw=1)
    right.text(0, TARGET + 5, f"{TARGET:.0f}", color="grey", fontsize=8)
    right.set_xlim(left=0)
    right.set_ylim(0, 520)
    right.set_xlabel("seconds from launch")
    right.set_ylabel(f"rolling training return (last {window} episodes)")
    right.set_title("Learning: one line per run")
    right.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds (0, 1, ...)")
    parser.add_argument("--frames", type=int, default=76_800,
                        help="frame budget of the CleanRL comparison: cleanrl*, torchrl_cleanrl, rlexp_cleanrl "
                             "(CleanRL's own default: 500000)")
    parser.add_argument("--sb3-frames", type=int, default=100_000,
                        help="frame budget of sb3_zoo (RL Zoo's n_timesteps for CartPole-v1: 100000)")
    parser.add_argument("--default-frames", type=int, default=None,
                        help="frame budget of rlexp_default, rlexp_grpo, rlexp_gru (default: their own collector.total_frames)")
    parser.add_argument("--trainers", default="cleanrl,rlexp_cleanrl,rlexp_default,torchrl_cleanrl,sb3_zoo",
                        help=f"comma-separated subset of {', '.join(TRAINERS)} (cleanrl_script is added when "
                             "--cleanrl-script is given)")
    parser.add_argument("--cleanrl-script", type=Path, default=None,
                        help="path of CleanRL's cleanrl/ppo.py, run as trainer cleanrl_script")
    parser.add_argument("--peers-python", type=Path, default=Path(".venv-peers/bin/python"),
                        help="python of the peer environment (relative paths: to the repository root)")
    parser.add_argument("--window", type=int, default=20, help="episodes in the rolling training return")
    parser.add_argument("--stop-when-solved", action="store_true",
                        help="end each run once its criterion is met (saves time with --frames 500000)")
    parser.add_argument("--write", action="store_true",
                        help=f"write the report to {RESULTS.relative_to(ROOT)} and the plot to {PLOT.relative_to(ROOT)}")
    args = parser.parse_args()
    args.trainers = args.trainers.split(",")
    unknown = set(args.trainers) - set(TRAINERS)
    if unknown:
        parser.error(f"unknown trainers {sorted(unknown)}; choose from {', '.join(TRAINERS)}")
    if args.cleanrl_script:
        args.cleanrl_script = args.cleanrl_script.resolve()
        if not args.cleanrl_script.is_file():
            parser.error(f"--cleanrl-script {args.cleanrl_script}: no such file")
        if "cleanrl_script" not in args.trainers:
            args.trainers.append("cleanrl_script")
    elif "cleanrl_script" in args.trainers:
        parser.error("trainer cleanrl_script needs --cleanrl-script PATH (CleanRL's cleanrl/ppo.py)")
    if not args.peers_python.is_absolute():
        args.peers_python = ROOT / args.peers_python
    if set(args.trainers) & set(PEER_TRAINERS) and not args.peers_python.exists():
        parser.error(f"the peer environment's python {args.peers_python} is missing; create it from the "
                     f"repository root with: {PEERS_INSTALL} (or pass --peers-python)")
    return args


def main() -> None:
    args = parse_args()
    trainers = args.trainers
    started, load = datetime.datetime.now(), os.getloadavg()
    runs: list[Run] = []
    floors: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="speed_cartpole_") as tmp:
        folder = Path(tmp)
        for i, seed in enumerate(range(args.seeds)):
            order = trainers[i % len(trainers):] + trainers[:i % len(trainers)]
            for trainer in order:
                run = launch(trainer, seed, args, folder)
                runs.append(run)
                d = describe(run, args.window)
                print(f"[seed {seed}] {trainer:15s} {fmt(d['fps']):>7} frames/s  475 after "
                      f"{fmt(d['wall_475'], '.1f')} s / {fmt(d['frames_475'])} frames  wall {d['wall']:.1f} s  "
                      f"peak RSS {fmt(d['rss'])} MiB  exit {run.exit_code}", flush=True)
                if run.exit_code not in (0, -signal.SIGTERM, 128 + signal.SIGTERM):
                    print((folder / f"{trainer}-{seed}.err").read_text()[-3000:], file=sys.stderr)
            shapes = {(r.num_envs, r.frames_per_batch, r.epochs, r.minibatches) for r in runs if r.trainer in FLOOR_TRAINERS}
            if shapes:
                floors.append(run_floor(sorted({s[0] for s in shapes}), sorted({s[1:] for s in shapes}), folder))
                print(f"[seed {seed}] cost floor: " + ", ".join(f"{f['num_envs']} envs {f['fps']:,.0f} frames/s"
                                                               for f in floors[-1]["floor"]), flush=True)
    uses_peers = bool(set(trainers) & set(PEER_TRAINERS))
    text = report(runs, floors, args, started, load, peer_versions(args.peers_python) if uses_peers else None)
    print("\n" + text)
    if args.write:
        RESULTS.write_text("# CartPole speed: rlexp vs CleanRL, torchrl and Stable-Baselines3\n\n"
                           "Written by `experiments/benchmarks/speed_cartpole.py --write` (its printed output, "
                           f"unedited). Plot: [{PLOT.name}]({PLOT.name}).\n\n" + text + "\n")
        plot(runs, args.window, PLOT)
        print(f"\nwrote {RESULTS.relative_to(ROOT)} and {PLOT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
