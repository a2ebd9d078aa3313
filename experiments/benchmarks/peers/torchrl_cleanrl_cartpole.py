"""torchrl PPO on CartPole-v1 with CleanRL ppo.py's settings: a peer of experiments/benchmarks/speed_cartpole.py.

Written against torchrl's public API (no code of CleanRL or of torchrl's examples copied); runs in the peer
environment (experiments/benchmarks/peers/requirements.txt, gymnasium 0.29). CleanRL ppo.py's settings:

* 4 CartPole-v1 envs in one process (a gymnasium ``SyncVectorEnv`` wrapped by torchrl's ``GymWrapper``, the
  vector env CleanRL uses) x 128 steps = 512 frames per iteration, 500k frames by default;
* Adam lr 2.5e-4, eps 1e-5, annealed linearly to 0 per iteration (``lr * (1 - (i - 1) / iterations)``);
* ``GAE`` gamma 0.99, lambda 0.95, computed once per iteration before the epochs (as CleanRL does);
* 4 epochs x 4 minibatches of 128 from a ``ReplayBuffer`` with ``SamplerWithoutReplacement``;
* ``ClipPPOLoss``: clip 0.2, per-minibatch advantage normalisation, clipped value loss (clip 0.2), entropy 0.01,
  squared-error value loss with ``critic_coeff`` 0.25 (CleanRL's ``0.5 * max(...)`` times vf_coef 0.5 -- torchrl's
  "l2" loss has no 1/2), global grad-norm clip 0.5;
* separate actor and critic MLPs 64x64 tanh, orthogonal init (gain sqrt 2, actor head 0.01, critic head 1);
* one torch thread.

One difference from CleanRL is torchrl's own: its GAE bootstraps through truncated episodes (CartPole's
500-step limit) and only cuts at terminations, where CleanRL treats truncation as termination.

Output: one JSON object per iteration (collection + update) on stdout, flushed, with the keys of
experiments/benchmarks/cleanrl_reference.py ``--json``: ``{"event": "iteration", "t", "iteration", "frames",
"returns", "lengths"}`` (wall time, frames so far, the episodes that ended in that iteration), preceded by
``{"event": "start", "t"}`` and followed by ``{"event": "end", "t", "frames"}``.

Run: ``.venv-peers/bin/python experiments/benchmarks/peers/torchrl_cleanrl_cartpole.py --seed 0 --total-frames 100000``
"""

from __future__ import annotations

import argparse
import json
import math
import time

import gymnasium as gym
import torch
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, ReplayBuffer
from torchrl.data.replay_buffers import SamplerWithoutReplacement
from torchrl.envs import GymWrapper, RewardSum, StepCounter, TransformedEnv
from torchrl.modules import ProbabilisticActor, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

NUM_ENVS, NUM_STEPS = 4, 128
EPOCHS, MINIBATCHES = 4, 4
LR, ADAM_EPS, MAX_GRAD_NORM = 2.5e-4, 1e-5, 0.5


def emit(event: str, **fields) -> None:
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


def make_env(seed: int) -> TransformedEnv:
    """4 CartPole envs in one gymnasium SyncVectorEnv, with per-episode return and length counters."""
    vector = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1") for _ in range(NUM_ENVS)])
    env = GymWrapper(vector, categorical_action_encoding=True)  # a TransformedEnv (autoreset handling)
    env.append_transform(RewardSum())
    env.append_transform(StepCounter())
    env.set_seed(seed)
    return env


def mlp(n_in: int, n_out: int, head_gain: float) -> nn.Sequential:
    """64x64 tanh MLP with orthogonal weights (gain sqrt 2; ``head_gain`` on the last layer), zero biases."""
    layers = [nn.Linear(n_in, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, n_out)]
    linears = [m for m in layers if isinstance(m, nn.Linear)]
    for i, layer in enumerate(linears):
        nn.init.orthogonal_(layer.weight, head_gain if i == len(linears) - 1 else math.sqrt(2))
        nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


def make_modules(env: TransformedEnv) -> tuple[ProbabilisticActor, ValueOperator]:
    n_obs = env.observation_spec["observation"].shape[-1]
    n_actions = env.action_spec.space.n
    actor = ProbabilisticActor(
        TensorDictModule(mlp(n_obs, n_actions, 0.01), in_keys=["observation"], out_keys=["logits"]),
        in_keys=["logits"], spec=env.action_spec, distribution_class=torch.distributions.Categorical,
        return_log_prob=True)
    critic = ValueOperator(mlp(n_obs, 1, 1.0), in_keys=["observation"])
    return actor, critic


def finished_episodes(batch) -> tuple[list[float], list[int]]:
    """Returns and lengths of the episodes that ended in this batch."""
    done = batch["next", "done"].squeeze(-1)
    returns = batch["next", "episode_reward"][done].squeeze(-1).tolist()
    lengths = batch["next", "step_count"][done].squeeze(-1).tolist()
    return returns, lengths


def update(batch, loss_module: ClipPPOLoss, optimizer: torch.optim.Optimizer, buffer: ReplayBuffer) -> None:
    """EPOCHS passes over the batch in MINIBATCHES shuffled minibatches, one Adam step each."""
    buffer.empty()
    buffer.extend(batch.reshape(-1))
    for _ in range(EPOCHS * MINIBATCHES):
        losses = loss_module(buffer.sample())
        loss = losses["loss_objective"] + losses["loss_critic"] + losses["loss_entropy"]
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(loss_module.parameters(), MAX_GRAD_NORM)
        optimizer.step()


def train(seed: int, total_frames: int) -> None:
    torch.manual_seed(seed)
    env = make_env(seed)
    actor, critic = make_modules(env)
    frames_per_batch = NUM_ENVS * NUM_STEPS
    iterations = total_frames // frames_per_batch
    collector = Collector(env, actor, frames_per_batch=frames_per_batch,
                                  total_frames=iterations * frames_per_batch, auto_register_policy_transforms=False)
    advantage = GAE(gamma=0.99, lmbda=0.95, value_network=critic, average_gae=False)
    loss_module = ClipPPOLoss(actor, critic, clip_epsilon=0.2, entropy_bonus=True, entropy_coeff=0.01,
                              critic_coeff=0.25, loss_critic_type="l2", normalize_advantage=True, clip_value=0.2)
    optimizer = torch.optim.Adam(loss_module.parameters(), lr=LR, eps=ADAM_EPS)
    buffer = ReplayBuffer(storage=LazyTensorStorage(frames_per_batch), sampler=SamplerWithoutReplacement(),
                          batch_size=frames_per_batch // MINIBATCHES)

    emit("start")
    frames = 0
    for iteration, batch in enumerate(collector, start=1):
        optimizer.param_groups[0]["lr"] = LR * (1.0 - (iteration - 1.0) / iterations)
        frames += batch.numel()
        with torch.no_grad():
            advantage(batch)
        update(batch, loss_module, optimizer, buffer)
        returns, lengths = finished_episodes(batch)
        emit("iteration", iteration=iteration, frames=frames, returns=returns, lengths=lengths)
    collector.shutdown()
    emit("end", frames=frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--total-frames", type=int, default=500_000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    train(args.seed, args.total_frames)


if __name__ == "__main__":
    main()
