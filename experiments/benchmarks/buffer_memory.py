"""Memory of 1M CartPole transitions in rlexp's ReplayBuffer, against the raw tensor bytes.

Run: .venv/bin/python experiments/benchmarks/buffer_memory.py [--transitions 1000000]
Collects one real rollout through rlexp's env wrapper and collector, then extends a ReplayBuffer
with copies of it until it holds N transitions. Prints the storage's tensor bytes and the process's
resident-memory growth, each as a ratio of the raw bytes of N transitions (target: <= 2x).
"""

from __future__ import annotations

import argparse
import resource

import torch

from rlexp.collector import Collector
from rlexp.data import LazyTensorStorage, ReplayBuffer
from rlexp.envs.gym import make_gym_env
from rlexp.registry import policies


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transitions", type=int, default=1_000_000)
    args = parser.parse_args()

    env = make_gym_env(id="CartPole-v1", num_envs=16)
    actor, _ = policies.build({"name": "mlp", "critic": False}, env.observation_space, env.action_space)
    rollout = Collector(env, actor, 16 * 256, torch.device("cpu"), seed=0).collect().reshape(-1)
    raw_per_transition = sum(t.element_size() * t[0].numel() for t in rollout.values(True, True))
    raw = raw_per_transition * args.transitions

    before = rss_bytes()
    buffer = ReplayBuffer(storage=LazyTensorStorage(args.transitions))
    while len(buffer) < args.transitions:
        buffer.extend(rollout[: args.transitions - len(buffer)])
    grown = rss_bytes() - before
    stored = sum(t.numel() * t.element_size() for t in buffer[:].values(True, True))

    print(f"transitions: {len(buffer):,}  keys: {len(list(rollout.keys(True, True)))}  "
          f"raw bytes/transition: {raw_per_transition}")
    print(f"raw tensor bytes:      {raw / 2**20:8.1f} MiB  (reference, 1.00x)")
    print(f"storage tensor bytes:  {stored / 2**20:8.1f} MiB  ({stored / raw:.2f}x)")
    print(f"process memory growth: {grown / 2**20:8.1f} MiB  ({grown / raw:.2f}x)")


if __name__ == "__main__":
    main()
