"""MuJoCo training time per frame against CleanRL's script, and the least any trainer on one core could take.

    python experiments/benchmarks/mujoco_speed.py [--env hopper] [--frames 40960] [--rounds 3] [--write]
        [--overrides +experiment=cleanrl_mujoco ...]
        [--cleanrl-script /work/peers/ppo_continuous_action.py --cleanrl-python /work/peers/venv/bin/python]

Each round measures, one after the other (a noisy machine then disturbs them alike), in microseconds per frame:

- ``cleanrl``: CleanRL's ``ppo_continuous_action.py``, unchanged, in its own environment (gymnasium 0.29,
  mujoco 2.3.3, the v4 env), for ``--frames`` steps; from the last SPS it prints (steps / seconds since its
  loop began, so its start-up is left out);
- ``rlexp``: ``python -m rlexp env=<env> [--overrides]`` (without overrides: the tuned defaults) for ``--frames``
  frames; from ``train/seconds`` (collection, advantages and update; start-up and evaluation left out);
- ``env``: the gymnasium vector env rlexp steps for the tuned defaults (same ``num_envs``), stepped with
  random actions and nothing else;
- ``update64`` / ``update256``: a lean plain-torch PPO update (64-64 tanh Gaussian actor and critic, CleanRL's
  clipped objective and value loss, backward, gradient-norm clip, Adam) on minibatches of 64 or 256, times the
  tuned defaults' 10 epochs, per frame.

The ratios are to ``cleanrl`` in the same round. ``env`` alone bounds from below what any trainer stepping the
env on one core can reach; ``env + update64`` is that bound for the update settings of CleanRL and of rlexp's
tuned defaults (10 epochs of minibatches of 64).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results"
CLEANRL_IDS = {"halfcheetah": "HalfCheetah-v4", "hopper": "Hopper-v4", "walker2d": "Walker2d-v4",
               "inverted_pendulum": "InvertedPendulum-v4"}
EPOCHS = 10  # CleanRL's update epochs, and those of conf/tuned/mujoco.yaml


def cleanrl_us(script: Path, python: Path, env: str, frames: int) -> float:
    """CleanRL's script for ``frames`` steps: microseconds per frame from the last SPS it prints."""
    with tempfile.TemporaryDirectory() as folder:
        out = subprocess.run([str(python), str(script), f"--env-id={CLEANRL_IDS[env]}", "--seed=1",
                              f"--total-timesteps={frames}"], cwd=folder, capture_output=True, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True).stdout
    return 1e6 / int(re.findall(r"SPS: (\d+)", out)[-1])


def rlexp_us(env: str, frames: int, overrides: list[str]) -> float:
    """``python -m rlexp env=<env> <overrides>`` for ``frames`` frames: microseconds of training per frame."""
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "rlexp", f"env={env}", *overrides, f"collector.total_frames={frames}",
                        "eval.interval=1000000000", "eval.episodes=1", "logger=csv", f"hydra.run.dir={folder}"],
                       cwd=ROOT, capture_output=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        last = json.loads((Path(folder) / "metrics.jsonl").read_text().splitlines()[-1])
    return 1e6 * last["train/seconds"] / last["frames"]


def env_us(env: str, seconds: float = 5.0) -> dict[str, float]:
    """The tuned defaults' gymnasium vector env stepped with pre-drawn random actions: microseconds per frame,
    with its number of envs and the sizes of one env's observation and action (for the lean update)."""
    from rlexp.config import compose_config
    from rlexp.envs import build_env

    vector_env = build_env(compose_config(f"env={env}").env).env
    vector_env.reset(seed=0)
    actions = [vector_env.action_space.sample() for _ in range(256)]
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        vector_env.step(actions[steps % len(actions)])
        steps += 1
    elapsed = time.perf_counter() - start
    vector_env.close()
    return {"env": 1e6 * elapsed / (steps * vector_env.num_envs), "num_envs": vector_env.num_envs,
            "obs_dim": vector_env.single_observation_space.shape[0],
            "act_dim": vector_env.single_action_space.shape[0]}


def mlp(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, outputs))


def update_us(obs_dim: int, act_dim: int, minibatch: int, updates: int = 300) -> float:
    """A lean clipped-PPO minibatch update, microseconds per frame at ``EPOCHS`` epochs."""
    g = torch.Generator().manual_seed(0)
    actor, critic = mlp(obs_dim, act_dim), mlp(obs_dim, 1)
    log_std = nn.Parameter(torch.zeros(act_dim))
    params = [*actor.parameters(), *critic.parameters(), log_std]
    optim = torch.optim.Adam(params, lr=3e-4, eps=1e-5)
    obs, action = torch.randn(minibatch, obs_dim, generator=g), torch.randn(minibatch, act_dim, generator=g)
    old_logp, old_value = torch.randn(minibatch, generator=g) - 3, torch.randn(minibatch, generator=g)
    advantage, returns = torch.randn(minibatch, generator=g), torch.randn(minibatch, generator=g)

    def step() -> None:
        dist = torch.distributions.Normal(actor(obs), log_std.exp(), validate_args=False)
        logp, entropy = dist.log_prob(action).sum(-1), dist.entropy().sum(-1)
        ratio = (logp - old_logp).exp()
        adv = (advantage - advantage.mean()) / (advantage.std() + 1e-8)
        pg = torch.max(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)).mean()
        value = critic(obs).squeeze(-1)
        clipped = old_value + (value - old_value).clamp(-0.2, 0.2)
        v_loss = 0.5 * torch.max((value - returns) ** 2, (clipped - returns) ** 2).mean()
        loss = pg - 0.0 * entropy.mean() + 0.5 * v_loss  # CleanRL computes the entropy term at coefficient 0
        optim.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(params, 0.5)
        optim.step()

    for _ in range(20):  # warm-up
        step()
    start = time.perf_counter()
    for _ in range(updates):
        step()
    return 1e6 * (time.perf_counter() - start) / updates * EPOCHS / minibatch


def measure_round(args: argparse.Namespace) -> dict[str, float]:
    row = {"cleanrl": cleanrl_us(args.cleanrl_script, args.cleanrl_python, args.env, args.frames),
           "rlexp": rlexp_us(args.env, args.frames, args.overrides), **env_us(args.env)}
    row["update64"] = update_us(row["obs_dim"], row["act_dim"], 64)
    row["update256"] = update_us(row["obs_dim"], row["act_dim"], 256)
    return row


def report(rows: list[dict], args: argparse.Namespace, started: str, load: tuple[float, float]) -> str:
    columns = ["cleanrl", "rlexp", "env", "update64", "update256"]
    bounds = {"rlexp": lambda r: r["rlexp"], "env alone": lambda r: r["env"],
              "env + update64": lambda r: r["env"] + r["update64"],
              "env + update256": lambda r: r["env"] + r["update256"]}
    lines = ["# MuJoCo: time per frame against CleanRL's script, and the floor", "",
             "Written by `experiments/benchmarks/mujoco_speed.py --write` (its printed output).", "",
             f"- Date: {started}; machine: {platform.machine()}, {os.cpu_count()} CPUs; load average (1 min) at start "
             f"{load[0]:.1f}, at end {load[1]:.1f}. One torch thread everywhere.",
             f"- rlexp: `python -m rlexp env={args.env}{''.join(' ' + o for o in args.overrides)}` (env: the tuned "
             f"defaults' {rows[0]['num_envs']} envs); CleanRL's "
             f"`--env-id={CLEANRL_IDS[args.env]}`; {args.frames:,} frames per run, {len(rows)} interleaved rounds.",
             "- Microseconds per frame (1M frames take that many seconds):", "",
             "| round | " + " | ".join(columns) + " | " + " | ".join(f"{b} / cleanrl" for b in bounds) + " |",
             "|---" * (1 + len(columns) + len(bounds)) + "|"]
    for i, r in enumerate(rows, 1):
        lines.append(f"| {i} | " + " | ".join(f"{r[c]:.0f}" for c in columns) + " | "
                     + " | ".join(f"{f(r) / r['cleanrl']:.2f}" for f in bounds.values()) + " |")
    lines.append("| median | " + " | ".join(f"{statistics.median(r[c] for r in rows):.0f}" for c in columns) + " | "
                 + " | ".join(f"{statistics.median(f(r) / r['cleanrl'] for r in rows):.2f}" for f in bounds.values())
                 + " |")
    ratio = statistics.median(r["rlexp"] / r["cleanrl"] for r in rows)
    floor = statistics.median((r["env"] + r["update64"]) / r["cleanrl"] for r in rows)
    lines += ["", f"Target: rlexp's time per 1M frames at most 1/3 of CleanRL's (ratio <= 0.33): rlexp {ratio:.2f} "
              f"({'met' if ratio <= 1 / 3 else 'NOT met'}). With 10 epochs of minibatches of 64, stepping the env and "
              f"a lean update alone come to {floor:.2f} of CleanRL's time."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="hopper", choices=sorted(CLEANRL_IDS))
    parser.add_argument("--frames", type=int, default=40960)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--overrides", nargs="*", default=[], help="for the rlexp runs, e.g. optim.num_minibatches=8")
    parser.add_argument("--cleanrl-script", type=Path, default=Path("/work/peers/ppo_continuous_action.py"))
    parser.add_argument("--cleanrl-python", type=Path, default=Path("/work/peers/venv/bin/python"))
    parser.add_argument("--write", action="store_true",
                        help="also write experiments/results/mujoco_speed_<env>[_<overrides>].md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    started, load_start = time.strftime("%Y-%m-%d %H:%M"), os.getloadavg()[0]
    rows = []
    for i in range(args.rounds):
        rows.append(measure_round(args))
        print(f"round {i + 1}: " + ", ".join(f"{k} {v:.0f}" for k, v in rows[-1].items()), flush=True)
    text = report(rows, args, started, (load_start, os.getloadavg()[0]))
    print(text)
    if args.write:
        slugs = [re.sub(r"[^\w.-]", "", override.replace("=", "-")) for override in args.overrides]
        name = "_".join(["mujoco_speed", args.env, *slugs])
        (RESULTS / f"{name}.md").write_text(text + "\n")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
