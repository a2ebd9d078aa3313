"""Stable-Baselines3 PPO on CartPole-v1 with RL Zoo's tuned settings: a peer of experiments/benchmarks/speed_cartpole.py.

Runs in the peer environment (experiments/benchmarks/peers/requirements.txt). The hyperparameters are RL Zoo's
(rl_zoo3 2.9.2, ``rl_zoo3/hyperparams/ppo.yml``, entry ``CartPole-v1``, checked against the released package):
n_envs 8, MlpPolicy, n_steps 32, batch_size 256, gae_lambda 0.8, gamma 0.98, n_epochs 20, ent_coef 0.0,
learning_rate lin_0.001, clip_range lin_0.2, n_timesteps 1e5. ``lin_X`` is the Zoo's linear schedule
``progress_remaining * X``. Everything else is SB3's default, as the Zoo leaves it: ``make_vec_env`` (a
``DummyVecEnv`` of ``Monitor``-wrapped envs), vf_coef 0.5, max_grad_norm 0.5, advantage normalisation, the
MlpPolicy's separate 64x64 tanh actor and critic. One torch thread.

Output: one JSON object per iteration on stdout, flushed, with the keys of
experiments/benchmarks/cleanrl_reference.py ``--json``: ``{"event": "iteration", "t", "iteration", "frames",
"returns", "lengths"}``, preceded by ``{"event": "start", "t"}`` and followed by ``{"event": "end", ...}``.
SB3 runs the update of rollout k *after* ``on_rollout_end``, so the line for rollout k is printed when rollout
k + 1 starts (``on_rollout_start``), or at ``on_training_end`` for the last one: the time between two lines
covers one collection plus one update, as for the other trainers.

Run: ``.venv-peers/bin/python experiments/benchmarks/peers/sb3_zoo_cartpole.py --seed 0 --total-frames 100000``
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

ZOO_CARTPOLE = {  # rl_zoo3 2.9.2 hyperparams/ppo.yml, CartPole-v1 (n_envs and n_timesteps used below)
    "n_steps": 32, "batch_size": 256, "gae_lambda": 0.8, "gamma": 0.98, "n_epochs": 20, "ent_coef": 0.0,
}
ZOO_N_ENVS, ZOO_TIMESTEPS = 8, 100_000
ZOO_LR, ZOO_CLIP = 0.001, 0.2  # lin_0.001, lin_0.2


def linear(initial: float):
    """The Zoo's ``lin_X`` schedule: X times the remaining fraction of training (1 -> 0)."""
    return lambda progress_remaining: progress_remaining * initial


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


class IterationLines(BaseCallback):
    """Prints one JSON line per rollout + update, with the returns of the episodes that ended in it."""

    def __init__(self):
        super().__init__()
        self.iteration = 0
        self.returns: list[float] = []
        self.lengths: list[int] = []

    def _on_training_start(self) -> None:
        emit("start")

    def _flush(self) -> None:
        self.iteration += 1
        emit("iteration", iteration=self.iteration, frames=self.num_timesteps, returns=self.returns,
             lengths=self.lengths)
        self.returns, self.lengths = [], []

    def _on_rollout_start(self) -> None:
        if self.num_timesteps:  # the previous rollout and its update are done
            self._flush()

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            if "episode" in info:  # set by Monitor when an episode ends
                self.returns.append(float(info["episode"]["r"]))
                self.lengths.append(int(info["episode"]["l"]))
        return True

    def _on_training_end(self) -> None:
        self._flush()
        emit("end", frames=self.num_timesteps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--total-frames", type=int, default=ZOO_TIMESTEPS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = make_vec_env("CartPole-v1", n_envs=ZOO_N_ENVS, seed=args.seed)
    model = PPO("MlpPolicy", env, learning_rate=linear(ZOO_LR), clip_range=linear(ZOO_CLIP), seed=args.seed,
                device="cpu", verbose=0, **ZOO_CARTPOLE)
    model.learn(total_timesteps=args.total_frames, callback=IterationLines())


if __name__ == "__main__":
    main()
