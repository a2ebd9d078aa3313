"""The cost floor of on-policy training on CartPole: what any trainer must pay per frame, in plain torch.

Issue 7 defines the floor as *vectorised env stepping plus one policy forward per step at the same batch
size*. ``floor_fps`` measures exactly that: gymnasium's numpy-vectorised ``CartPoleVectorEnv`` (the env rlexp
steps) and a 4-64-64-2 tanh MLP whose logits are sampled into actions, one thread, under
``torch.inference_mode``. Nothing else: no log-prob, no value, no storage.

``update_seconds`` adds the other unavoidable part of PPO, a lean plain-torch clipped-PPO update (actor and
critic forward, clipped objective, clipped value loss, entropy, backward, grad clipping, Adam) over
``epochs x minibatches`` of a ``frames_per_batch`` batch; ``frames_per_batch / (steps x step_time + update)``
is then the fastest a PPO loop with these settings can run ("floor + update").

Run: ``.venv/bin/python experiments/benchmarks/cost_floor.py [--num-envs 4 16] [--update 512:4:4 2048:4:4]``
prints a table, or with ``--json`` one JSON object (the benchmark scripts call it that way).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import gymnasium as gym
import numpy as np
import torch
from torch import nn


def mlp(out_features: int, obs_dim: int = 4, hidden: int = 64) -> nn.Sequential:
    return nn.Sequential(nn.Linear(obs_dim, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, out_features))


def floor_fps(num_envs: int, seconds: float = 1.5, seed: int = 0) -> dict[str, float]:
    """Frames/s of ``env.step`` + one actor forward and sample per step; also the two parts' us per step."""
    torch.manual_seed(seed)
    env = gym.make_vec("CartPole-v1", num_envs, vectorization_mode="vector_entry_point")
    actor = mlp(2)
    obs, _ = env.reset(seed=seed)
    t_policy = t_env = 0.0
    steps = 0
    with torch.inference_mode():
        for _ in range(200):  # warm-up
            action = torch.multinomial(actor(torch.from_numpy(obs)).softmax(-1), 1).squeeze(-1)
            obs, *_ = env.step(action.numpy())
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            t0 = time.perf_counter()
            action = torch.multinomial(actor(torch.from_numpy(obs)).softmax(-1), 1).squeeze(-1).numpy()
            t1 = time.perf_counter()
            obs, *_ = env.step(action)
            t2 = time.perf_counter()
            t_policy += t1 - t0
            t_env += t2 - t1
            steps += 1
        elapsed = time.perf_counter() - start
    env.close()
    return {"num_envs": num_envs, "fps": steps * num_envs / elapsed, "us_per_step": 1e6 * elapsed / steps,
            "env_us_per_step": 1e6 * t_env / steps, "policy_us_per_step": 1e6 * t_policy / steps}


class LeanPPO:
    """A minimal clipped-PPO update on preallocated tensors (the same math as CleanRL's, no logging)."""

    def __init__(self, batch: int, obs_dim: int = 4, n_actions: int = 2, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.actor, self.critic = mlp(n_actions, obs_dim), mlp(1, obs_dim)
        self.params = [*self.actor.parameters(), *self.critic.parameters()]
        self.optim = torch.optim.Adam(self.params, lr=2.5e-4, eps=1e-5)
        self.obs = torch.randn(batch, obs_dim, generator=g)
        self.action = torch.randint(n_actions, (batch,), generator=g)
        with torch.no_grad():
            self.logp = torch.log_softmax(self.actor(self.obs), -1).gather(1, self.action[:, None]).squeeze(1)
            self.value = self.critic(self.obs).squeeze(1)
        self.adv = torch.randn(batch, generator=g)
        self.ret = self.value + self.adv

    def loss(self, idx: torch.Tensor, clip: float = 0.2) -> torch.Tensor:
        """CleanRL's total loss on minibatch ``idx``: clipped objective, 0.5 x clipped value loss, entropy."""
        logits = self.actor(self.obs[idx])
        logp_all = torch.log_softmax(logits, -1)
        logp = logp_all.gather(1, self.action[idx, None]).squeeze(1)
        entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
        ratio = (logp - self.logp[idx]).exp()
        adv = self.adv[idx]
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
        pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()
        v, v_old, ret = self.critic(self.obs[idx]).squeeze(1), self.value[idx], self.ret[idx]
        v_clipped = v_old + (v - v_old).clamp(-clip, clip)
        v_loss = 0.5 * torch.max((v - ret) ** 2, (v_clipped - ret) ** 2).mean()
        return pg - 0.01 * entropy + 0.5 * v_loss

    def minibatch(self, idx: torch.Tensor) -> None:
        loss = self.loss(idx)
        self.optim.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.params, 0.5)
        self.optim.step()

    def iteration(self, epochs: int, minibatches: int) -> None:
        n = self.obs.shape[0]
        size = math.ceil(n / minibatches)
        for _ in range(epochs):
            perm = torch.randperm(n)
            for start in range(0, n, size):
                self.minibatch(perm[start:start + size])


def update_seconds(frames_per_batch: int, epochs: int, minibatches: int, repeats: int = 7) -> float:
    """Median seconds of one lean PPO update of ``epochs x minibatches`` over ``frames_per_batch`` samples."""
    ppo = LeanPPO(frames_per_batch)
    ppo.iteration(1, minibatches)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        ppo.iteration(epochs, minibatches)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(num_envs: list[int], updates: list[tuple[int, int, int]], seconds: float) -> dict:
    floors = {n: floor_fps(n, seconds) for n in num_envs}
    result = {"floor": list(floors.values()), "update": []}
    for frames_per_batch, epochs, minibatches in updates:
        seconds_update = update_seconds(frames_per_batch, epochs, minibatches)
        entry = {"frames_per_batch": frames_per_batch, "epochs": epochs, "minibatches": minibatches,
                 "update_seconds": seconds_update,
                 "ms_per_minibatch": 1e3 * seconds_update / (epochs * minibatches)}
        for n, floor in floors.items():
            if frames_per_batch % n == 0:
                collect = frames_per_batch / n * floor["us_per_step"] * 1e-6
                entry[f"floor_plus_update_fps@{n}"] = frames_per_batch / (collect + seconds_update)
        result["update"].append(entry)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--update", nargs="*", default=["512:4:4", "2048:4:4"],
                        help="frames_per_batch:epochs:minibatches of the lean PPO update to time")
    parser.add_argument("--seconds", type=float, default=1.5, help="measuring time per env count")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    updates = [tuple(int(x) for x in u.split(":")) for u in args.update]
    result = measure(args.num_envs, updates, args.seconds)
    if args.json:
        print(json.dumps(result))
        return
    print(f"{'envs':>5} {'floor frames/s':>15} {'us/step':>8} {'env us':>7} {'policy us':>9}")
    for f in result["floor"]:
        print(f"{f['num_envs']:>5} {f['fps']:>15,.0f} {f['us_per_step']:>8.1f} {f['env_us_per_step']:>7.1f} "
              f"{f['policy_us_per_step']:>9.1f}")
    for u in result["update"]:
        extra = "  ".join(f"{k.split('@')[1]} envs: {v:,.0f} frames/s" for k, v in u.items() if k.startswith("floor_plus"))
        print(f"lean PPO update {u['frames_per_batch']} frames x {u['epochs']} epochs x {u['minibatches']} minibatches: "
              f"{1e3 * u['update_seconds']:.1f} ms ({u['ms_per_minibatch']:.2f} ms/minibatch); floor+update {extra}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
