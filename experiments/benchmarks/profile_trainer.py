"""Where rlexp's training time goes on CartPole, with CleanRL's settings and with the defaults.

Runs ``rlexp.trainer.train`` in this process on the composed config (as the CLI composes it) with timers
wrapped around the pieces of the loop -- nothing in rlexp is edited; the wrappers are installed for the
duration of the run and removed afterwards (about 1 us of overhead per timed call) -- and prints:

1. a breakdown table per config: env stepping, the env's dict wrapper, policy calls in collection (``PolicyStep``),
   rollout stacking (``stack_steps``), the rest of collection, value estimation, ``Minibatches`` construction and
   iteration, loss forward, backward, zero_grad, grad clipping, Adam, per-minibatch bookkeeping, per-iteration
   metrics, evaluation, logging; the parts sum to the loop's wall time;
2. for CleanRL's settings, the same run of experiments/benchmarks/cleanrl_reference.py (its own timers) and
   the cost floor (experiments/benchmarks/cost_floor.py) per frame, side by side;
3. start-up: wall time of ``python -c pass``, ``import torch``, ``python -m rlexp --help``, the imports a
   training run makes, and the top packages of ``python -X importtime``; W&B's ``init`` from the run;
4. micro-benchmarks of rlexp's hot-path pieces next to their alternatives (policy call paths, env step wrapper,
   rollout stacking, minibatches, loss forward+backward against a lean functional loss, distribution argument
   validation, per-minibatch bookkeeping, Adam implementations and grad clipping, value estimation).

``--cprofile N`` adds a separate cProfile'd CleanRL-settings run (10k frames, or --frames-cleanrl if fewer): its top N
functions by own time and the cumulative time of the hot spots (``PolicyStep``, the env wrapper, ``stack_steps``,
TensorDict indexing, the TensorDictModule calls left, distribution validation, ...).

Run: ``.venv/bin/python experiments/benchmarks/profile_trainer.py [--frames-cleanrl 51200]
[--frames-default 61440] [--skip-startup] [--skip-micro] [--cprofile 25] [--compile] [--write]`` (about 2-3
minutes; ``--write`` also saves the printed report to experiments/results/profile_trainer.md).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import io
import json
import os
import pstats
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PY = sys.executable
sys.path.insert(0, str(HERE))

os.environ.setdefault("WANDB_MODE", "offline")  # the default config's W&B run stays offline
os.environ.setdefault("WANDB_SILENT", "true")

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from tensordict.nn import InteractionType, set_interaction_type  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook  # noqa: E402

import cost_floor  # noqa: E402
from speed_cartpole import cpu_name  # noqa: E402
from rlexp.__main__ import new_run_id  # noqa: E402  (also registers the config's rlexp_root resolver)
import rlexp.collector  # noqa: E402
import rlexp.trainer  # noqa: E402
from rlexp.envs import TensorDictVectorEnv, stack_steps  # noqa: E402
from rlexp.loggers import RunInfo  # noqa: E402
from rlexp.objectives.ppo import PPOLoss  # noqa: E402
from rlexp.objectives.value.base import ValueEstimatorBase  # noqa: E402
from rlexp.policies.step import PolicyStep  # noqa: E402
from rlexp.registry import envs, losses, loggers, policies, value_estimators  # noqa: E402
from rlexp.trainer import Minibatches, unchecked_distributions  # noqa: E402

CONFIGS = {
    "cleanrl": ["+experiment=cleanrl_cartpole", "logger=none"],
    "default": ["env=cartpole"],  # W&B offline, evaluation on: what `python -m rlexp env=cartpole` does
}


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


# ---- timers ----------------------------------------------------------------------------------------------
class Timers:
    """Seconds and call counts per name, plus the phase marks the breakdown needs."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.collect_starts: list[float] = []
        self.minibatches_ends: list[float] = []  # Minibatches built: the update starts
        self.step_ends: list[float] = []  # the last optimizer step of each iteration
        self.train_start = self.train_end = 0.0

    def wrap(self, name: str | Callable[..., str], fn: Callable) -> Callable:
        seconds, calls = self.seconds, self.calls

        def timed(*args, **kwargs):
            key = name(*args) if callable(name) else name
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[key] += time.perf_counter() - start
                calls[key] += 1

        return timed

    def add(self, name: str, start: float) -> float:
        """Count one call of ``name`` that began at ``start``; return the time now."""
        now = time.perf_counter()
        self.seconds[name] += now - start
        self.calls[name] += 1
        return now


@contextlib.contextmanager
def patched(obj, attr: str, value):
    original = getattr(obj, attr)
    setattr(obj, attr, value)
    try:
        yield
    finally:
        setattr(obj, attr, original)


@contextlib.contextmanager
def instrumented(timers: Timers):
    """Timers around every piece of rlexp's training loop (class and module attributes, restored on exit)."""
    train_envs: list[TensorDictVectorEnv] = []
    env_init, collector_init = TensorDictVectorEnv.__init__, rlexp.collector.Collector.__init__

    def env_init_timed(self, env):
        env_init(self, env)
        train_envs.append(self)
        label = "env_raw" if len(train_envs) == 1 else "eval_env_raw"  # trainer builds the training env first
        self.env.step = timers.wrap(label, self.env.step)

    def collector_init_timed(self, env, policy, *args, **kwargs):
        collector_init(self, env, policy, *args, **kwargs)
        self.policy = timers.wrap("policy", self.policy)  # the PolicyStep the collector calls

    collect = rlexp.collector.Collector.collect

    def collect_timed(self):
        timers.collect_starts.append(time.perf_counter())
        return collect(self)

    def step_pre(optimizer, args, kwargs):
        timers.step_start = time.perf_counter()

    def step_post(optimizer, args, kwargs):
        now = time.perf_counter()
        timers.seconds["optim_step"] += now - timers.step_start
        timers.calls["optim_step"] += 1
        if len(timers.step_ends) < len(timers.minibatches_ends):
            timers.step_ends.append(now)
        else:
            timers.step_ends[-1] = now

    step_wrapper = timers.wrap(lambda self, *a: "env_wrapper" if self is train_envs[0] else "eval_env_wrapper",
                               TensorDictVectorEnv.step_and_maybe_reset)
    with contextlib.ExitStack() as stack:
        for obj, attr, value in [
            (TensorDictVectorEnv, "__init__", env_init_timed),
            (TensorDictVectorEnv, "step_and_maybe_reset", step_wrapper),
            (rlexp.collector.Collector, "__init__", collector_init_timed),
            (rlexp.collector.Collector, "collect", timers.wrap("collect", collect_timed)),
            (rlexp.collector, "stack_steps", timers.wrap("stack_steps", stack_steps)),
            (ValueEstimatorBase, "forward", timers.wrap("value_estimator", ValueEstimatorBase.forward)),
            (rlexp.trainer, "Minibatches", timed_minibatches(timers)),
            (PPOLoss, "forward", timers.wrap("loss_forward", PPOLoss.forward)),
            (torch.Tensor, "backward", timers.wrap("backward", torch.Tensor.backward)),
            (torch.optim.Optimizer, "zero_grad", timers.wrap("zero_grad", torch.optim.Optimizer.zero_grad)),
            (torch.nn.utils, "clip_grad_norm_", timers.wrap("clip_grad", torch.nn.utils.clip_grad_norm_)),
            (rlexp.trainer, "evaluate", timers.wrap("evaluate", rlexp.trainer.evaluate)),
            (rlexp.trainer, "episode_metrics", timers.wrap("episode_metrics", rlexp.trainer.episode_metrics)),
            (rlexp.trainer, "save_checkpoint", timers.wrap("checkpoint", rlexp.trainer.save_checkpoint)),
        ]:
            stack.enter_context(patched(obj, attr, value))
        pre = register_optimizer_step_pre_hook(step_pre)
        post = register_optimizer_step_post_hook(step_post)
        stack.callback(pre.remove)
        stack.callback(post.remove)
        yield


def timed_minibatches(timers: Timers) -> type[Minibatches]:
    """``Minibatches`` timing its construction ("minibatches") and each minibatch it yields ("minibatch_index")."""

    class TimedMinibatches(Minibatches):
        def __init__(self, *args, **kwargs):
            start = time.perf_counter()
            super().__init__(*args, **kwargs)
            timers.minibatches_ends.append(timers.add("minibatches", start))

        def __iter__(self):
            batches = super().__iter__()
            while True:
                start = time.perf_counter()
                batch = next(batches, None)  # an epoch's final (empty) next() counts as bookkeeping
                if batch is None:
                    return
                timers.add("minibatch_index", start)
                yield batch

    return TimedMinibatches


def timed_logger(cfg, run_dir: Path, timers: Timers) -> Callable:
    def make():
        start = time.perf_counter()
        logger = loggers.build(cfg.logger, RunInfo(dir=run_dir, config={}, id=new_run_id(), name="profile", group="profile"))
        timers.seconds["logger_init"] += time.perf_counter() - start
        logger.log = timers.wrap("logger_log", logger.log)
        logger.finish = timers.wrap("logger_finish", logger.finish)
        return logger

    return make


def profile_config(name: str, frames: int, eval_interval: int | None) -> dict:
    """The timed breakdown of one training run of config ``name``."""
    overrides = [*CONFIGS[name], f"collector.total_frames={frames}"]
    if eval_interval is not None:
        overrides.append(f"eval.interval={eval_interval}")
    cfg = compose_config(*overrides)
    timers = Timers()
    with tempfile.TemporaryDirectory(prefix="profile_trainer_") as tmp, instrumented(timers), \
            contextlib.redirect_stderr(io.StringIO()):  # the progress bar
        timers.train_start = time.perf_counter()
        result = rlexp.trainer.train(cfg, Path(tmp), make_logger=timed_logger(cfg, Path(tmp), timers))
        timers.train_end = time.perf_counter()
    return breakdown(timers, cfg, result)


def cprofile_config(name: str, frames: int, top: int) -> None:
    """cProfile of a separate (un-timed) run: top functions by own time and the hot spots named in the report."""
    cfg = compose_config(*CONFIGS[name], f"collector.total_frames={frames}", f"eval.interval={frames}")
    profiler = cProfile.Profile()
    with tempfile.TemporaryDirectory(prefix="profile_trainer_") as tmp, contextlib.redirect_stderr(io.StringIO()):
        profiler.enable()
        rlexp.trainer.train(cfg, Path(tmp), make_logger=timed_logger(cfg, Path(tmp), Timers()))
        profiler.disable()
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("tottime").print_stats(top)
    print(f"\n## cProfile, {name} settings, {frames:,} frames: top {top} by own time (cProfile inflates Python-heavy "
          "code)\n" + "\n".join(line for line in stream.getvalue().splitlines()[4:] if line.strip()))
    total = max(ct for (_, _, _, ct, _) in stats.stats.values())
    print("\nHot spots (cumulative time under cProfile, share of the profiled run):")
    for label, match in HOT_SPOTS:
        found = [(key, value) for key, value in stats.stats.items() if match(key)]
        calls = sum(v[1] for _, v in found)
        cum = sum(v[3] for _, v in found)
        print(f"  {label:70s} {calls:8d} calls {cum:6.2f} s {100 * cum / total:5.1f}%")


def _fn(file_part: str, func: str):
    return lambda key: file_part in key[0] and key[2] == func


HOT_SPOTS = [
    ("PolicyStep.__call__ (policy calls, collection and evaluation)", _fn("rlexp/policies/step.py", "__call__")),
    ("TensorDictVectorEnv.step_and_maybe_reset (incl. the env step)", _fn("rlexp/envs/tensordict_env.py",
                                                                          "step_and_maybe_reset")),
    ("gymnasium CartPoleVectorEnv.step", _fn("classic_control/cartpole.py", "step")),
    ("stack_steps (rollout assembly)", _fn("rlexp/envs/tensordict_env.py", "stack_steps")),
    ("TensorDictBase.__getitem__ (minibatch indexing, key lookups)", _fn("tensordict/base.py", "__getitem__")),
    ("TensorDict.__init__", _fn("tensordict/_td.py", "__init__")),
    ("PPOLoss.forward", _fn("rlexp/objectives/ppo.py", "forward")),
    ("TensorDict.from_any (TensorDictModule calls left: value estimation)", _fn("tensordict/base.py", "from_any")),
    ("importlib.util.find_spec (tensordict's pandas lookup in from_any)", _fn("importlib.util", "find_spec")),
    ("torch.distributions constraint checks (validate_args; off in training)",
     _fn("torch/distributions/constraints.py", "check")),
    ("torch.distributions.Distribution.__init__", _fn("torch/distributions/distribution.py", "__init__")),
    ("torch.optim.Adam.step (foreach)", _fn("torch/optim/adam.py", "step")),
    ("torch.nn.Linear.forward", _fn("torch/nn/modules/linear.py", "forward")),
]


def breakdown(t: Timers, cfg, result: dict) -> dict:
    s, c = t.seconds, t.calls
    iterations = len(t.collect_starts)
    loop = t.train_end - t.collect_starts[0]
    update_loop = sum(end - start for start, end in zip(t.minibatches_ends, t.step_ends))
    between = sum(nxt - end for end, nxt in zip(t.step_ends, [*t.collect_starts[1:], t.train_end]))
    pre_update = sum(end - start for start, end in zip(t.collect_starts, t.minibatches_ends))
    update_parts = ("minibatch_index", "loss_forward", "backward", "zero_grad", "clip_grad", "optim_step")
    rows = [
        ("env stepping (gymnasium CartPoleVectorEnv + same-step reset)", s["env_raw"], c["env_raw"]),
        ("env dict wrapper (step_and_maybe_reset minus env.step)", s["env_wrapper"] - s["env_raw"],
         c["env_wrapper"]),
        ("policy calls in collection (PolicyStep)", s["policy"], c["policy"]),
        ("rollout stacking (stack_steps)", s["stack_steps"], c["stack_steps"]),
        ("collection rest (recurrent-state carry, loop)",
         s["collect"] - s["policy"] - s["env_wrapper"] - s["stack_steps"], c["collect"]),
        ("value estimation (GAE, critic on root+next)", s["value_estimator"], c["value_estimator"]),
        ("Minibatches construction (exclude next, reshape)", s["minibatches"], c["minibatches"]),
        ("pre-update rest (lr, frame count)",
         pre_update - s["collect"] - s["value_estimator"] - s["minibatches"], iterations),
        ("minibatch indexing (Minibatches iteration)", s["minibatch_index"], c["minibatch_index"]),
        ("loss forward (ClipPPOLoss)", s["loss_forward"], c["loss_forward"]),
        ("backward", s["backward"], c["backward"]),
        ("zero_grad", s["zero_grad"], c["zero_grad"]),
        ("clip_grad_norm_ (foreach)", s["clip_grad"], c["clip_grad"]),
        ("Adam step (foreach)", s["optim_step"], c["optim_step"]),
        ("per-minibatch bookkeeping (loss sum, isfinite checks, torch.stack)",
         update_loop - sum(s[k] for k in update_parts), c["loss_forward"]),
        ("per-iteration metrics, progress bar",
         between - s["episode_metrics"] - s["evaluate"] - s["logger_log"] - s["checkpoint"] - s["logger_finish"],
         iterations),
        ("episode statistics (episode_metrics)", s["episode_metrics"], c["episode_metrics"]),
        (f"evaluation ({cfg.eval.episodes} deterministic episodes)", s["evaluate"], c["evaluate"]),
        ("logging (logger.log)", s["logger_log"], c["logger_log"]),
        ("checkpoint + logger finish", s["checkpoint"] + s["logger_finish"], 1),
    ]
    frames = int(result["frames"])
    minibatches = c["loss_forward"]
    update = update_loop
    groups = {
        "env stepping": s["env_raw"],
        "policy calls": s["policy"],
        "PPO update (indexing .. Adam, bookkeeping)": update,
        "value estimation": s["value_estimator"],
        "env wrapper, stacking, Python overhead outside those": loop - s["env_raw"] - s["policy"] - update
        - s["value_estimator"] - s["evaluate"] - s["logger_log"] - s["checkpoint"] - s["logger_finish"],
        "evaluation": s["evaluate"],
        "logging": s["logger_log"],
    }
    return {"rows": rows, "groups": groups, "loop": loop, "frames": frames, "iterations": iterations,
            "minibatches": minibatches, "update": update, "setup": t.collect_starts[0] - t.train_start,
            "logger_init": s["logger_init"], "num_envs": cfg.env.num_envs,
            "frames_per_batch": cfg.collector.frames_per_batch, "epochs": cfg.optim.ppo_epochs,
            "num_minibatches": cfg.optim.num_minibatches, "eval_return": result.get("eval/episode_return")}


def print_breakdown(name: str, b: dict) -> None:
    print(f"\n## rlexp, {name} settings: {b['frames']:,} frames, {b['iterations']} iterations, {b['num_envs']} envs, "
          f"{b['epochs']}x{b['num_minibatches']} minibatches of {b['frames_per_batch'] // b['num_minibatches']}")
    print(f"loop {b['loop']:.2f} s = {b['frames'] / b['loop']:,.0f} frames/s (evaluation included); setup before "
          f"the first iteration {b['setup']:.2f} s (logger init {b['logger_init']:.2f} s)\n")
    print(f"| {'part':66s} | {'s':>6} | {'% loop':>6} | {'calls':>6} | {'us/call':>8} | {'us/frame':>8} |")
    print(f"|{'-' * 68}|{'-' * 8}|{'-' * 8}|{'-' * 8}|{'-' * 10}|{'-' * 10}|")
    for label, seconds, calls in b["rows"]:
        per_call = 1e6 * seconds / calls if calls else float("nan")
        print(f"| {label:66s} | {seconds:6.2f} | {100 * seconds / b['loop']:6.1f} | {calls:6d} | {per_call:8.0f} | "
              f"{1e6 * seconds / b['frames']:8.1f} |")
    total = sum(r[1] for r in b["rows"])
    print(f"| {'sum of parts (loop total ' + format(b['loop'], '.2f') + ' s)':66s} | {total:6.2f} | "
          f"{100 * total / b['loop']:6.1f} |        |          | {1e6 * total / b['frames']:8.1f} |")
    print("\nGrouped as in the issue:")
    for label, seconds in b["groups"].items():
        print(f"  {label:52s} {seconds:6.2f} s  {100 * seconds / b['loop']:5.1f}%")
    print(f"  PPO update per minibatch: {1e3 * b['update'] / b['minibatches']:.2f} ms")


# ---- CleanRL reference and cost floor --------------------------------------------------------------------
def reference_breakdown(frames: int) -> dict:
    out = subprocess.run([PY, str(HERE / "cleanrl_reference.py"), "--json", "--total-timesteps", str(frames)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    records = [json.loads(line) for line in out.stdout.splitlines()]
    its = [r for r in records if r["event"] == "iteration"]
    end = next(r for r in records if r["event"] == "end")
    total = defaultdict(float)
    for r in its:
        for key, value in r["seconds"].items():
            total[key] += value
    return {"frames": end["frames"], "loop": end["loop_seconds"], **total, "iterations": len(its)}


def print_comparison(b: dict, ref: dict, floor: dict, lean_ms: float) -> None:
    rows = {r[0].split(" (")[0]: r[1] for r in b["rows"]}
    f_rl, f_ref = b["frames"], ref["frames"]
    us = lambda seconds, frames: 1e6 * seconds / frames  # noqa: E731
    rl_update = b["update"] / b["minibatches"]
    ref_update = ref["update"] / (ref["iterations"] * 16)
    print("\n## CleanRL settings, per frame: rlexp vs the CleanRL reference (same process conditions) vs the floor\n")
    print(f"| {'part':40s} | {'rlexp':>9} | {'CleanRL ref':>11} | {'floor':>9} |")
    print(f"|{'-' * 42}|{'-' * 11}|{'-' * 13}|{'-' * 11}|")
    print(f"| {'env step, us/frame':40s} | {us(rows['env stepping'], f_rl):9.1f} | {us(ref['env'], f_ref):11.1f} | "
          f"{floor['env_us_per_step'] / floor['num_envs']:9.1f} |")
    print(f"| {'env dict wrapper, us/frame':40s} | "
          f"{us(rows['env dict wrapper'], f_rl):9.1f} | {'-':>11} | {'-':>9} |")
    print(f"| {'policy call, us/frame':40s} | {us(rows['policy calls in collection'], f_rl):9.1f} | "
          f"{us(ref['policy'], f_ref):11.1f} | {floor['policy_us_per_step'] / floor['num_envs']:9.1f} |")
    rest_rl = rows["rollout stacking"] + rows["collection rest"]
    rest_ref = ref["rollout"] - ref["env"] - ref["policy"]
    print(f"| {'collection rest + stacking, us/frame':40s} | {us(rest_rl, f_rl):9.1f} | {us(rest_ref, f_ref):11.1f} | "
          f"{0:9.1f} |")
    print(f"| {'advantages (GAE), us/frame':40s} | {us(rows['value estimation'], f_rl):9.1f} | "
          f"{us(ref['gae'], f_ref):11.1f} | {'-':>9} |")
    print(f"| {'PPO update, ms per minibatch of 128':40s} | {1e3 * rl_update:9.2f} | {1e3 * ref_update:11.2f} | "
          f"{lean_ms:9.2f} |")
    print(f"| {'whole loop, frames/s':40s} | {b['frames'] / b['loop']:9,.0f} | {f_ref / ref['loop']:11,.0f} | "
          f"{floor['fps']:9,.0f} |")
    print("(floor: env step + one policy forward, no update; its 'PPO update' column is the lean plain-torch update)")


# ---- start-up --------------------------------------------------------------------------------------------
def wall(cmd: list[str], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def startup() -> None:
    print("\n## Start-up (median of 3 fresh processes)\n")
    cases = [("python -c pass", [PY, "-c", "pass"]),
             ("import numpy", [PY, "-c", "import numpy"]),
             ("import torch", [PY, "-c", "import torch"]),
             ("import tensordict", [PY, "-c", "import tensordict"]),
             ("import gymnasium", [PY, "-c", "import gymnasium"]),
             ("import hydra (+omegaconf)", [PY, "-c", "import hydra"]),
             ("import wandb", [PY, "-c", "import wandb"]),
             ("python -m rlexp --help", [PY, "-m", "rlexp", "--help"]),
             ("import rlexp.__main__, rlexp.trainer, wandb (a run's imports)",
              [PY, "-c", "import rlexp.__main__, rlexp.trainer, wandb"])]
    for label, cmd in cases:
        print(f"  {label:60s} {wall(cmd):5.2f} s")
    out = subprocess.run([PY, "-X", "importtime", "-c", "import rlexp.__main__, rlexp.trainer, wandb"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    # Lines come children-first; read backwards, a line's parent is the last line seen one level up. A
    # package's time is counted where it is first entered from another package (torch under rlexp.trainer).
    by_root: dict[str, int] = defaultdict(int)
    parents: list[str] = []
    importer: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for line in reversed(out.stderr.splitlines()):
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)", line)
        if not m:
            continue
        depth, root = len(m.group(3)) // 2, m.group(4).split(".")[0]
        del parents[depth:]
        if not parents or parents[-1] != root:
            by_root[root] += int(m.group(2))
            importer[root][parents[-1] if parents else "-"] += int(m.group(2))
        parents.append(root)
    print("\n  python -X importtime of a run's imports: time inside each package, entered from another package"
          " (nested packages also count in their importer's line; single run):")
    for root, micros in sorted(by_root.items(), key=lambda kv: -kv[1])[:12]:
        sources = ", ".join(f"{k} {v / 1e6:.2f} s" for k, v in sorted(importer[root].items(), key=lambda kv: -kv[1]))
        print(f"    {root:20s} {micros / 1e6:5.2f} s  (entered from: {sources})")


# ---- micro-benchmarks ------------------------------------------------------------------------------------
def per_call(fn: Callable[[], object], seconds: float = 0.6) -> float:
    """Microseconds per call: the fastest of 7 timed blocks (the least disturbed by other processes)."""
    for _ in range(20):
        fn()
    n = 1
    while True:  # calibrate the block length
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start > seconds / 7:
            break
        n *= 2
    blocks = []
    for _ in range(7):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        blocks.append((time.perf_counter() - start) / n)
    return 1e6 * min(blocks)


class StackedActorCritic(torch.nn.Module):
    """Actor (4-64-64-2) and critic (4-64-64-1) MLPs evaluated together: each layer is one ``baddbmm`` over
    the two networks' stacked weights, halving the number of kernel launches of forward and backward."""

    def __init__(self, obs_dim: int = 4, hidden: int = 64, n_actions: int = 2):
        super().__init__()
        sizes = [(obs_dim, hidden), (hidden, hidden), (hidden, max(n_actions, 1))]
        self.weights = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(2, i, o) / i ** 0.5) for i, o in sizes)
        self.biases = torch.nn.ParameterList(torch.nn.Parameter(torch.zeros(2, 1, o)) for _, o in sizes)
        self.n_actions = n_actions

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = obs.expand(2, *obs.shape)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < len(self.weights) - 1:
                h = h.tanh()
        return h[0, :, :self.n_actions], h[1, :, :1]


Results = list[tuple[str, float]]


def micro(compile_loss: bool) -> None:
    print("\n## Micro-benchmarks behind the optimisation opportunities (1 thread, us per call, fastest of 7 blocks)\n")
    torch.set_num_threads(1)
    cfg = compose_config(*CONFIGS["cleanrl"])
    env = envs.build(cfg.env)
    actor, critic = policies.build(cfg.policy, env.observation_space, env.action_space)
    loss_module = losses.build(cfg.loss, actor, critic)
    loss_module.make_value_estimator(value_estimators.build(cfg.value_estimator, value_network=critic))
    collector = rlexp.collector.Collector(env, actor, cfg.collector.frames_per_batch, torch.device("cpu"), seed=0)
    rollout = collector.collect()
    with torch.no_grad():
        loss_module.value_estimator(rollout)
    results = [*micro_policy(actor), *micro_collection(env, actor), *micro_minibatches(rollout),
               *micro_loss(loss_module, rollout, compile_loss), *micro_optimizer(list(loss_module.parameters())),
               *micro_value(loss_module, critic, rollout)]
    env.close()
    width = max(len(label) for label, _ in results)
    for label, value in results:
        print(f"  {label:{width}s} {value:9.1f} us")


def micro_policy(actor) -> Results:
    """The collector's policy call (``PolicyStep``) next to the TensorDictModule call and plain-torch samplers."""
    policy_step, trunk = PolicyStep(actor), actor.module[0].module  # the logits MLP inside the TensorDictModule
    results = []
    for n in (4, 16):
        obs = torch.randn(n, 4)
        td = TensorDict({"observation": obs}, batch_size=[n])

        def rlexp_step():
            return policy_step({"observation": obs})

        def tensordict_call():
            with set_interaction_type(InteractionType.RANDOM):
                return actor(td.copy())

        def categorical(validate: bool | None = None):
            dist = torch.distributions.Categorical(logits=trunk(obs), validate_args=validate)
            a = dist.sample()
            return a, dist.log_prob(a)

        def lean():
            logp = torch.log_softmax(trunk(obs), -1)
            a = torch.multinomial(logp.exp(), 1)
            return a, logp.gather(-1, a)

        with torch.no_grad():
            results += [
                (f"policy call, {n} envs: rlexp PolicyStep (the collector's call), no_grad", per_call(rlexp_step)),
                (f"policy call, {n} envs: actor(TensorDict), TensorDictModule path, no_grad",
                 per_call(tensordict_call)),
                (f"policy call, {n} envs: MLP + Categorical(logits) sample + log_prob", per_call(categorical)),
                (f"policy call, {n} envs: same, Categorical(validate_args=False)",
                 per_call(lambda: categorical(False))),
                (f"policy call, {n} envs: MLP + log_softmax + multinomial + gather", per_call(lean)),
            ]
        with torch.inference_mode():
            results.append((f"policy call, {n} envs: rlexp PolicyStep, inference_mode", per_call(rlexp_step)))
    return results


def micro_collection(env: TensorDictVectorEnv, actor) -> Results:
    """The env's dict wrapper against the raw gymnasium step, and assembling a rollout from 128 step dicts."""
    policy_step, root, steps = PolicyStep(actor), env.reset(seed=0), []
    with torch.no_grad():
        for _ in range(128):  # as the collector does
            step, root = env.step_and_maybe_reset(policy_step(root))
            steps.append(step)
    action, obs = torch.zeros(env.num_envs, dtype=torch.long), torch.zeros(env.num_envs, 4)
    raw, actions = env.env, action.numpy()
    return [
        (f"env step through TensorDictVectorEnv.step_and_maybe_reset ({env.num_envs} envs)",
         per_call(lambda: env.step_and_maybe_reset({"observation": obs, "action": action}))),
        (f"raw env.step of the same vector env ({env.num_envs} envs)", per_call(lambda: raw.step(actions))),
        (f"rollout assembly: stack_steps(128 step dicts [{env.num_envs}])", per_call(lambda: stack_steps(steps))),
    ]


def micro_minibatches(rollout: TensorDict) -> Results:
    """rlexp's ``Minibatches`` (TensorDict indexing) against indexing a dict of plain tensors."""
    minibatches = Minibatches(rollout, 4)
    tensors = dict(minibatches.batch.items(True, True))

    def rlexp_epoch():
        for _ in minibatches:
            pass

    def tensor_epoch():
        for idx in torch.randperm(len(minibatches.batch)).split(minibatches.size):
            {k: v[idx] for k, v in tensors.items()}

    return [("Minibatches(rollout of 512, 4) construction (exclude next, reshape)",
             per_call(lambda: Minibatches(rollout, 4))),
            ("one epoch of 4 minibatches: iterating Minibatches (TensorDict indexing)", per_call(rlexp_epoch)),
            ("one epoch of 4 minibatches: dict of plain tensors indexed", per_call(tensor_epoch))]


def micro_loss(loss_module, rollout: TensorDict, compile_loss: bool) -> Results:
    """rlexp's loss forward+backward and per-minibatch bookkeeping, against lean plain-torch losses."""
    mb = next(iter(Minibatches(rollout, 4)))  # what the trainer feeds the loss
    results = []

    def rlexp_loss():
        loss_td = loss_module(mb)
        sum(v for k, v in loss_td.items() if k.startswith("loss_")).backward()
        return loss_td

    with unchecked_distributions():  # as in training
        results.append(("loss forward + backward, rlexp ClipPPOLoss, minibatch 128 (validation off, as trained)",
                        per_call(rlexp_loss)))
    results.append(("  same with torch.distributions argument validation on", per_call(rlexp_loss)))
    lean_ppo = cost_floor.LeanPPO(128)
    idx = torch.arange(128)
    results.append(("loss forward + backward, lean plain-torch clipped PPO, minibatch 128",
                    per_call(lambda: lean_ppo.loss(idx).backward())))
    stacked = StackedActorCritic()
    obs128, act128, adv128 = lean_ppo.obs[idx], lean_ppo.action[idx], lean_ppo.adv[idx]

    def stacked_loss():
        logits, value = stacked(obs128)
        logp_all = torch.log_softmax(logits, -1)
        ratio = (logp_all.gather(1, act128[:, None]).squeeze(1) - lean_ppo.logp[idx]).exp()
        entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
        pg = torch.max(-adv128 * ratio, -adv128 * ratio.clamp(0.8, 1.2)).mean()
        (pg - 0.01 * entropy + 0.5 * ((value.squeeze(1) - lean_ppo.ret[idx]) ** 2).mean()).backward()

    results.append(("  lean loss with actor+critic as one batched MLP (baddbmm), no value clip",
                    per_call(stacked_loss)))
    if compile_loss:
        compiled = torch.compile(lean_ppo.loss)
        start = time.perf_counter()
        compiled(idx).backward()
        results.append(("  lean loss torch.compile'd: first call (compilation), ms",
                        1e3 * (time.perf_counter() - start)))
        results.append(("  lean loss torch.compile'd: forward + backward",
                        per_call(lambda: compiled(idx).backward())))
    return results + micro_bookkeeping(rlexp_loss())


def micro_bookkeeping(loss_td: TensorDict) -> Results:
    """The trainer's per-minibatch bookkeeping and its per-iteration average of 16 minibatches."""
    grad_norm = torch.tensor(1.0)

    def per_minibatch():
        loss = sum(v for k, v in loss_td.items() if k.startswith("loss_"))
        if not torch.isfinite(loss) or not torch.isfinite(grad_norm):
            raise FloatingPointError(loss)
        return torch.stack([*(v.detach().float().mean() for v in loss_td.values()), grad_norm])

    outputs = [per_minibatch() for _ in range(16)]
    return [("per-minibatch bookkeeping: loss sum, isfinite, torch.stack of loss_td means + grad norm",
             per_call(per_minibatch)),
            ("per-iteration torch.stack(16 minibatch rows).mean(0).tolist() into metrics",
             per_call(lambda: dict(zip([*loss_td.keys(), "train/grad_norm"], torch.stack(outputs).mean(0).tolist()))))]


def micro_optimizer(params: list[torch.nn.Parameter]) -> Results:
    """Adam implementations, grad clipping and zero_grad on the loss module's parameters (rlexp's marked)."""
    grads = [torch.randn_like(p) for p in params]
    for p, g in zip(params, grads):
        p.grad = g
    results = []
    for label, kwargs in [("Adam step, default (CPU: for-loop)", {}),
                          ("Adam step, foreach=True (rlexp)", {"foreach": True}),
                          ("Adam step, fused=True (rounds differently)", {"fused": True})]:
        try:
            opt = torch.optim.Adam(params, lr=1e-9, eps=1e-5, **kwargs)
            results.append((label, per_call(opt.step)))
        except (RuntimeError, TypeError) as err:
            results.append((f"{label}: unavailable ({err})", float("nan")))
    results.append(("clip_grad_norm_, default", per_call(lambda: torch.nn.utils.clip_grad_norm_(params, 0.5))))
    results.append(("clip_grad_norm_, foreach=True (rlexp)",
                    per_call(lambda: torch.nn.utils.clip_grad_norm_(params, 0.5, foreach=True))))

    opt = torch.optim.Adam(params, foreach=True)

    def zero_grad():
        for p, g in zip(params, grads):
            p.grad = g
        opt.zero_grad()

    results.append((f"optimizer.zero_grad() (set_to_none), incl. re-attaching {len(params)} grads",
                    per_call(zero_grad)))
    return results


def micro_value(loss_module, critic, rollout: TensorDict) -> Results:
    """rlexp's GAE module on one rollout against plain tensors and a Python loop."""
    def rlexp_gae():
        with torch.no_grad():
            loss_module.value_estimator(rollout.exclude("advantage", "value_target", "state_value",
                                                        ("next", "state_value")))

    obs_all, next_obs = rollout["observation"], rollout["next", "observation"]
    reward, done, term = rollout["next", "reward"], rollout["next", "done"], rollout["next", "terminated"]

    def lean_gae():
        with torch.no_grad():
            v = critic.module(obs_all)
            nv = critic.module(next_obs)
            adv = torch.zeros_like(v)
            last = torch.zeros_like(v[:, 0])
            delta = reward + 0.99 * nv * (~term) - v
            decay = 0.99 * 0.95 * (~done)
            for t in range(v.shape[1] - 1, -1, -1):
                last = delta[:, t] + decay[:, t] * last
                adv[:, t] = last
            return adv

    return [("value estimation of one 512-frame rollout, rlexp GAE module", per_call(rlexp_gae)),
            ("value estimation of one 512-frame rollout, plain tensors + Python loop", per_call(lean_gae))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames-cleanrl", type=int, default=51_200, help="100 iterations of 512 frames")
    parser.add_argument("--frames-default", type=int, default=61_440, help="30 iterations of 2048 frames")
    parser.add_argument("--configs", default="cleanrl,default")
    parser.add_argument("--cprofile", type=int, default=0, help="print the top N functions of the cleanrl run")
    parser.add_argument("--skip-startup", action="store_true")
    parser.add_argument("--skip-micro", action="store_true")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile of the lean loss (compilation takes ~30 s on this machine)")
    parser.add_argument("--write", action="store_true", help="save the printed report to experiments/results/")
    args = parser.parse_args()
    if args.write:
        report, stdout = io.StringIO(), sys.stdout
        sys.stdout = Tee(stdout, report)
        started, load = datetime.datetime.now(), os.getloadavg()
    try:
        run(args)
    finally:
        if args.write:
            sys.stdout = stdout
    if args.write:
        path = ROOT / "experiments" / "results" / "profile_trainer.md"
        path.parent.mkdir(parents=True, exist_ok=True)
        header = (f"# Where rlexp's CartPole training time goes\n\nWritten by `experiments/benchmarks/profile_trainer.py "
                  f"{' '.join(sys.argv[1:])}` (its printed output, unedited).\n\n- Date: {started:%Y-%m-%d %H:%M} (local)\n"
                  f"- Machine: {cpu_name()}, {os.cpu_count()} CPUs, shared: load average (1 min) {load[0]:.1f} at start, "
                  f"{os.getloadavg()[0]:.1f} at end; other processes were running, so absolute timings swing between "
                  "sections -- compare numbers measured next to each other.\n\n")
        path.write_text(header + "```text\n" + report.getvalue() + "```\n")
        print(f"wrote {path.relative_to(ROOT)}")


class Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    print(f"profile_trainer: torch {torch.__version__}, 1 thread; timings include the load of other processes "
          "on this machine")
    for name in args.configs.split(","):
        frames = args.frames_cleanrl if name == "cleanrl" else args.frames_default
        b = profile_config(name, frames, frames if name == "cleanrl" else None)
        print_breakdown(name, b)
        if name == "cleanrl":
            ref = reference_breakdown(frames)
            floor = cost_floor.floor_fps(b["num_envs"])
            lean_ms = 1e3 * cost_floor.update_seconds(b["frames_per_batch"], b["epochs"], b["num_minibatches"]) / (
                b["epochs"] * b["num_minibatches"])
            print_comparison(b, ref, floor, lean_ms)
        else:
            floor = cost_floor.floor_fps(b["num_envs"])
            upd = cost_floor.update_seconds(b["frames_per_batch"], b["epochs"], b["num_minibatches"])
            steps = b["frames_per_batch"] / b["num_envs"]
            with_update = b["frames_per_batch"] / (steps * floor["us_per_step"] * 1e-6 + upd)
            loop_no_eval = b["loop"] - b["groups"]["evaluation"]
            fps = b["frames"] / loop_no_eval
            print(f"\nCost floor at {b['num_envs']} envs: {floor['fps']:,.0f} frames/s (env {floor['env_us_per_step']:.0f} "
                  f"us + policy {floor['policy_us_per_step']:.0f} us per step); rlexp loop without evaluation "
                  f"{fps:,.0f} frames/s = {fps / floor['fps']:.1%} of it. Floor + lean PPO update "
                  f"({1e3 * upd / (b['epochs'] * b['num_minibatches']):.2f} ms/minibatch): {with_update:,.0f} frames/s "
                  f"-> rlexp at {fps / with_update:.1%}.")
    if args.cprofile:
        cprofile_config("cleanrl", min(10_240, args.frames_cleanrl), args.cprofile)
    if not args.skip_startup:
        startup()
    if not args.skip_micro:
        micro(args.compile)


if __name__ == "__main__":
    main()
