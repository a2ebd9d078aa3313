"""Keep chosen entries of a vector env's observations, e.g. CartPole without its velocities.

gymnasium's ``VectorObservationWrapper`` refuses same-step autoreset, whose final observations
arrive in ``info["final_obs"]``; this wrapper filters those too, so any same-step vector env
(rlexp's CartPole adapter or a sync vector env) can hide part of its state from the policy.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv, VectorWrapper


class SelectObservation(VectorWrapper):
    """Observations ``obs[..., indices]`` of a flat ``Box`` observation space (order as given)."""

    def __init__(self, env: VectorEnv, indices: list[int]):
        super().__init__(env)
        space = env.single_observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"Observation indices need a flat Box observation space, got {space}.")
        indices = [int(i) for i in indices]
        if not indices or len(set(indices)) != len(indices) or not all(0 <= i < space.shape[0] for i in indices):
            raise ValueError(f"Observation indices must be distinct entries of 0..{space.shape[0] - 1}, got {indices}.")
        self.indices = np.asarray(indices)
        self.single_observation_space = spaces.Box(space.low[self.indices], space.high[self.indices],
                                                   dtype=space.dtype)
        self.observation_space = spaces.Box(env.observation_space.low[:, self.indices],
                                            env.observation_space.high[:, self.indices], dtype=space.dtype)

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs[:, self.indices], info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if "final_obs" in info:
            done = info["_final_obs"]
            final = np.zeros_like(obs[:, self.indices])
            if done.any():
                final[done] = np.stack(info["final_obs"][done])[:, self.indices]
            info = {**info, "final_obs": final}
        return obs[:, self.indices], reward, terminated, truncated, info
