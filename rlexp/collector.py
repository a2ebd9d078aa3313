"""Rollout collection: run the policy in the vectorised env, return a ``[num_envs, T]`` tensordict."""

from __future__ import annotations

import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, TensorDictModuleBase, set_interaction_type

from rlexp.envs import TensorDictVectorEnv


class Collector:
    """Collects ``frames_per_batch`` frames per call as ``frames_per_batch // num_envs`` steps.

    Episodes run on across calls; the returned rollout has time as its last batch dimension
    (torchrl's layout) and lives on ``device``.
    """

    def __init__(self, env: TensorDictVectorEnv, policy: TensorDictModuleBase, frames_per_batch: int,
                 device: torch.device, seed: int):
        self.env, self.policy, self.device = env, policy, device
        self.steps = frames_per_batch // env.num_envs
        self._td = env.reset(seed=seed)

    @torch.no_grad()
    def collect(self) -> TensorDict:
        steps = []
        with set_interaction_type(InteractionType.RANDOM):
            for _ in range(self.steps):
                td = self.policy(self._td.to(self.device))
                td, self._td = self.env.step_and_maybe_reset(td)
                steps.append(td)
        return torch.stack(steps, dim=-1).to(self.device)


@torch.no_grad()
def evaluate(env: TensorDictVectorEnv, policy: TensorDictModuleBase, device: torch.device,
             seed: int | None = None) -> dict[str, torch.Tensor]:
    """One deterministic episode per sub-env: returns and lengths of each, shape ``[num_envs]``."""
    td = env.reset(seed=seed)
    returns = torch.zeros(env.num_envs)
    lengths = torch.zeros(env.num_envs, dtype=torch.long)
    running = torch.ones(env.num_envs, dtype=torch.bool)
    with set_interaction_type(InteractionType.DETERMINISTIC):
        while running.any():
            td, next_td = env.step_and_maybe_reset(policy(td.to(device)))
            returns += td["next", "reward"].squeeze(-1).cpu() * running
            lengths += running
            running &= ~td["next", "done"].squeeze(-1).cpu()
            td = next_td
    env.pop_finished_episodes()
    return {"episode_return": returns, "episode_length": lengths}
