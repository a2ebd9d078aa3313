"""Keep chosen entries of a vector env's observations, e.g. CartPole without its velocities, and scale them.

gymnasium's ``VectorObservationWrapper`` refuses same-step autoreset, whose final observations
arrive in ``info["final_obs"]``; this wrapper filters those too, so any same-step vector env
(rlexp's CartPole adapter or a sync vector env) can hide part of its state from the policy.
"""

from __future__ import annotations

import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv, VectorWrapper


class SelectObservation(VectorWrapper):
    """Observations ``obs[..., indices] * scale`` of a flat ``Box`` observation space (order as given).

    ``scale`` (positive, one per kept entry, default 1) brings entries of very different ranges to
    a common one, e.g. CartPole's pole angle (about ±0.2 rad) to that of the cart position.
    """

    def __init__(self, env: VectorEnv, indices: list[int] | None = None, scale: list[float] | None = None):
        super().__init__(env)
        space = env.single_observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"Selecting or scaling observations needs a flat Box observation space, got {space}.")
        indices = list(range(space.shape[0])) if indices is None else [int(i) for i in indices]
        if not indices or len(set(indices)) != len(indices) or not all(0 <= i < space.shape[0] for i in indices):
            raise ValueError(f"Observation indices must be distinct entries of 0..{space.shape[0] - 1}, got {indices}.")
        scale = np.ones(len(indices)) if scale is None else np.asarray(list(scale), dtype=np.float64)
        if scale.shape != (len(indices),) or not (np.isfinite(scale) & (scale > 0)).all():
            raise ValueError(f"Observation scale must be {len(indices)} positive numbers, one per kept entry, "
                             f"got {scale.tolist()}.")
        self.indices, self.scale = np.asarray(indices), scale.astype(space.dtype)
        self.single_observation_space = spaces.Box(space.low[self.indices] * self.scale,
                                                   space.high[self.indices] * self.scale, dtype=space.dtype)
        self.observation_space = spaces.Box(env.observation_space.low[:, self.indices] * self.scale,
                                            env.observation_space.high[:, self.indices] * self.scale,
                                            dtype=space.dtype)

    def _observe(self, obs: np.ndarray) -> np.ndarray:
        return obs[:, self.indices] * self.scale

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._observe(obs), info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        if "final_obs" in info:
            done = info["_final_obs"]
            final = np.zeros_like(self._observe(obs))
            if done.any():
                final[done] = self._observe(np.stack(info["final_obs"][done]))
            info = {**info, "final_obs": final}
        return self._observe(obs), reward, terminated, truncated, info
