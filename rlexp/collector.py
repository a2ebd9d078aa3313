"""Rollout collection: run the policy in the vectorised env, return a ``[num_envs, T]`` tensordict.

``Collector`` steps a fixed number of frames and lets episodes run on across calls (PPO).
``EpisodeCollector`` runs whole episodes from group-shared start states (GRPO).
For a recurrent policy every step also stores the hidden states the policy read (zeros after an
env reset, see ``RecurrentStates``) and its ``("next", state)`` outputs, beside ``is_init``.
"""

from __future__ import annotations

import numpy as np
import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, TensorDictModuleBase, set_interaction_type

from rlexp.envs import TensorDictVectorEnv
from rlexp.policies.recurrent import RecurrentStates

MASK = ("collector", "mask")


def to_device(td: TensorDict, device: torch.device) -> TensorDict:
    """``td`` on ``device``; env tensordicts are already on the CPU, where ``.to`` would still copy (~17 us)."""
    return td if device.type == "cpu" else td.to(device)


class Collector:
    """Collects ``frames_per_batch`` frames per call as ``frames_per_batch // num_envs`` steps.

    Episodes run on across calls; the returned rollout has time as its last batch dimension
    (torchrl's layout) and lives on ``device``.
    """

    def __init__(self, env: TensorDictVectorEnv, policy: TensorDictModuleBase, frames_per_batch: int,
                 device: torch.device, seed: int):
        self.env, self.policy, self.device = env, policy, device
        self.steps = frames_per_batch // env.num_envs
        self.states = RecurrentStates(policy)
        self._td = self.states.reset(env.reset(seed=seed))

    @torch.no_grad()
    def collect(self) -> TensorDict:
        steps = []
        with set_interaction_type(InteractionType.RANDOM):
            for _ in range(self.steps):
                td = self.policy(to_device(self._td, self.device))
                td, self._td = self.env.step_and_maybe_reset(td)
                self.states.carry(td, self._td)
                steps.append(td)
        return to_device(torch.stack(steps, dim=-1), self.device)

    def finished_episodes(self) -> dict[str, np.ndarray]:
        """Return, length and truncation flag of the episodes that ended since the last call."""
        return self.env.pop_finished_episodes()

    def state_dict(self) -> dict:
        """The envs' state and the pending root tensordict (observation, recurrent states)."""
        return {"env": self.env.state_dict(), "td": self._td}

    def load_state_dict(self, state: dict, seed: int) -> None:
        """Continue exactly where ``state`` was taken, or from envs reset with ``seed`` if it holds no env state."""
        if self.env.load_state_dict(state["env"]):
            self._td = state["td"]
        else:
            self._td = self.states.reset(self.env.reset(seed=seed))


class EpisodeCollector:
    """One episode per sub-env, in groups of ``group_size`` envs that start from the same state.

    Each call resets every block of ``group_size`` envs with one seed, fresh per group and per call,
    and steps until every episode has ended (terminated or hit the env's time limit). Steps after an
    episode's end are padding: ``("collector", "mask")`` is False there, and they never count as frames.
    """

    def __init__(self, env: TensorDictVectorEnv, policy: TensorDictModuleBase, group_size: int,
                 device: torch.device, seed: int, max_steps: int = 100_000):
        self.env, self.policy, self.device = env, policy, device
        self.group_size, self.max_steps = group_size, max_steps
        self.groups = env.num_envs // group_size
        self.states = RecurrentStates(policy)
        self.rng = np.random.default_rng(seed)
        self._episodes: dict[str, np.ndarray] = {}

    @torch.no_grad()
    def collect(self) -> TensorDict:
        seeds = self.rng.integers(2**31, size=self.groups).repeat(self.group_size).tolist()
        td = self.states.reset(self.env.reset(seed=seeds))
        running = torch.ones(self.env.num_envs, dtype=torch.bool)
        steps = []
        with set_interaction_type(InteractionType.RANDOM):
            while running.any():
                if len(steps) == self.max_steps:
                    raise RuntimeError(f"Episodes did not end within {self.max_steps} steps; give the env a time "
                                       "limit (env.max_episode_steps) to collect whole episodes.")
                td, next_td = self.env.step_and_maybe_reset(self.policy(to_device(td, self.device)))
                self.states.carry(td, next_td)
                td[MASK] = running.clone()
                running &= ~td["next", "done"].squeeze(-1)
                steps.append(td)
                td = next_td
        self.env.pop_finished_episodes()  # padding episodes; the statistics come from the masked rollout
        rollout = torch.stack(steps, dim=-1)
        self._record_episodes(rollout)
        return to_device(rollout, self.device)

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
        self._episodes = {"return": (rollout["next", "reward"].squeeze(-1) * mask).sum(-1).numpy(),
                          "length": mask.sum(-1).numpy(), "truncated": truncated.numpy()}


@torch.no_grad()
def evaluate(env: TensorDictVectorEnv, policy: TensorDictModuleBase, device: torch.device,
             seed: int | None = None) -> dict[str, torch.Tensor]:
    """One deterministic episode per sub-env: returns and lengths of each, shape ``[num_envs]``."""
    states = RecurrentStates(policy)
    td = states.reset(env.reset(seed=seed))
    returns = torch.zeros(env.num_envs)
    lengths = torch.zeros(env.num_envs, dtype=torch.long)
    running = torch.ones(env.num_envs, dtype=torch.bool)
    with set_interaction_type(InteractionType.DETERMINISTIC):
        while running.any():
            td, next_td = env.step_and_maybe_reset(policy(to_device(td, device)))
            states.carry(td, next_td)
            returns += td["next", "reward"].squeeze(-1).cpu() * running
            lengths += running
            running &= ~td["next", "done"].squeeze(-1).cpu()
            td = next_td
    env.pop_finished_episodes()
    return {"episode_return": returns, "episode_length": lengths}
