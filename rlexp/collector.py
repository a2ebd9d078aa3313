"""Rollout collection: run the policy in the vectorised env, return a ``[num_envs, T]`` tensordict.

``Collector`` steps a fixed number of frames and lets episodes run on across calls (PPO).
``EpisodeCollector`` runs whole episodes from group-shared start states (GRPO).
For a recurrent policy every step also stores the hidden states the policy read (zeros after an
env reset, see ``RecurrentStates``) and its ``("next", state)`` outputs, beside ``is_init``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModuleBase

from rlexp.envs import Step, TensorDictVectorEnv, stack_steps
from rlexp.policies.recurrent import RecurrentStates
from rlexp.policies.step import PolicyStep

MASK = ("collector", "mask")


def policy_step(policy: TensorDictModuleBase | Callable[..., Step]) -> Callable[..., Step]:
    """The policy as ``(step, deterministic=False) -> step``: a tensordict module through ``PolicyStep``; a
    callable that already steps (the seeds of a ``num_seeds`` run, ``rlexp.seeds.SeedsPolicy``) as it is."""
    return PolicyStep(policy) if isinstance(policy, TensorDictModuleBase) else policy


def recurrent_states(policy) -> RecurrentStates:
    """The GRU states a tensordict policy carries; none for a step callable (it holds no recurrent policy)."""
    return RecurrentStates(policy if isinstance(policy, TensorDictModuleBase) else None)


def to_device(step: Step, device: torch.device) -> Step:
    """``step`` on ``device``; env steps are already on the CPU."""
    return step if device.type == "cpu" else {key: value.to(device) for key, value in step.items()}


class Collector:
    """Collects ``frames_per_batch`` frames per call as ``frames_per_batch // num_envs`` steps.

    Episodes run on across calls; the returned rollout has time as its last batch dimension
    (torchrl's layout) and lives on ``device``.
    """

    def __init__(self, env: TensorDictVectorEnv, policy: TensorDictModuleBase | Callable[..., Step],
                 frames_per_batch: int, device: torch.device, seed: int):
        self.env, self.policy, self.device = env, policy_step(policy), device
        self.steps = frames_per_batch // env.num_envs
        self.states = recurrent_states(policy)
        self._root = self.states.reset(env.reset(seed=seed))

    @torch.no_grad()
    def collect(self) -> TensorDict:
        steps = []
        for _ in range(self.steps):
            step, self._root = self.env.step_and_maybe_reset(self.policy(to_device(self._root, self.device)))
            self.states.carry(step, self._root)
            steps.append(to_device(step, self.device))
        return stack_steps(steps)

    def finished_episodes(self) -> dict[str, np.ndarray]:
        """Return, length and truncation flag of the episodes that ended since the last call."""
        return self.env.pop_finished_episodes()

    def state_dict(self) -> dict:
        """The envs' state and the pending root tensordict (observation, recurrent states)."""
        return {"env": self.env.state_dict(), "root": dict(self._root)}

    def load_state_dict(self, state: dict, seed: int) -> None:
        """Continue exactly where ``state`` was taken, or from envs reset with ``seed`` if it holds no env state."""
        if self.env.load_state_dict(state["env"]):
            self._root = dict(state["root"])
        else:
            self._root = self.states.reset(self.env.reset(seed=seed))


class EpisodeCollector:
    """One episode per sub-env, in groups of ``group_size`` envs that start from the same state.

    Each call resets every block of ``group_size`` envs with one seed, fresh per group and per call,
    and steps until every episode has ended (terminated or hit the env's time limit). Steps after an
    episode's end are padding: ``("collector", "mask")`` is False there, and they never count as frames.
    """

    def __init__(self, env: TensorDictVectorEnv, policy: TensorDictModuleBase | Callable[..., Step], group_size: int,
                 device: torch.device, seed: int, max_steps: int = 100_000):
        self.env, self.policy, self.device = env, policy_step(policy), device
        self.group_size, self.max_steps = group_size, max_steps
        self.groups = env.num_envs // group_size
        self.states = recurrent_states(policy)
        self.rng = np.random.default_rng(seed)
        self._episodes: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def collect(self) -> TensorDict:
        seeds = self.rng.integers(2**31, size=self.groups).repeat(self.group_size).tolist()
        root = self.states.reset(self.env.reset(seed=seeds))
        running = torch.ones(self.env.num_envs, dtype=torch.bool)
        steps = []
        while running.any():
            if len(steps) == self.max_steps:
                raise RuntimeError(f"Episodes did not end within {self.max_steps} steps; give the env a time "
                                   "limit (env.max_episode_steps) to collect whole episodes.")
            step, next_root = self.env.step_and_maybe_reset(self.policy(to_device(root, self.device)))
            self.states.carry(step, next_root)
            step[MASK] = running.clone()
            running &= ~step["next", "done"].squeeze(-1)
            steps.append(to_device(step, self.device))
            root = next_root
        self.env.pop_finished_episodes()  # padding episodes; the statistics come from the masked rollout
        rollout = stack_steps(steps)
        self._record_episodes(rollout)
        return rollout

    def finished_episodes(self) -> dict[str, np.ndarray]:
        episodes, self._episodes = self._episodes, {}
        return episodes

    def state_dict(self) -> dict:
        """The envs' state (their RNGs draw the padding steps' resets) and the generator of the group seeds."""
        return {"env": self.env.state_dict(), "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict, seed: int) -> None:
        self.env.load_state_dict(state["env"])
        self.rng.bit_generator.state = state["rng"]

    def _record_episodes(self, rollout: TensorDict) -> None:
        mask = rollout[MASK]
        truncated = (rollout["next", "truncated"].squeeze(-1) & mask).any(-1)
        self._episodes = {"return": (rollout["next", "reward"].squeeze(-1) * mask).sum(-1).cpu().numpy(),
                          "length": mask.sum(-1).cpu().numpy(), "truncated": truncated.cpu().numpy(),
                          "env": np.arange(len(mask))}  # one episode per sub-env


@torch.no_grad()
def evaluate(env: TensorDictVectorEnv, policy: TensorDictModuleBase, device: torch.device,
             seed: int | None = None) -> dict[str, torch.Tensor]:
    """One deterministic episode per sub-env: returns and lengths of each, shape ``[num_envs]``."""
    states, act = recurrent_states(policy), policy_step(policy)
    root = states.reset(env.reset(seed=seed))
    returns = torch.zeros(env.num_envs)
    lengths = torch.zeros(env.num_envs, dtype=torch.long)
    running = torch.ones(env.num_envs, dtype=torch.bool)
    while running.any():
        step, next_root = env.step_and_maybe_reset(act(to_device(root, device), deterministic=True))
        states.carry(step, next_root)
        returns += step["next", "reward"].squeeze(-1) * running
        lengths += running
        running &= ~step["next", "done"].squeeze(-1)
        root = next_root
    env.pop_finished_episodes()
    return {"episode_return": returns, "episode_length": lengths}
