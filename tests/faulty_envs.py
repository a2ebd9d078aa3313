"""Small gymnasium envs with faults, registered for tests (``imports: [faulty_envs]`` in a CLI run)."""

import ctypes

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class Walk(gym.Env):
    """A 1-D walk: the action pushes a point; reward is minus its distance to the origin; 20-step episodes.

    ``nan_at``: the step (counted over the env's life) whose ``nan_entry`` ("observation" or "reward")
    is NaN. ``obs_shape``/``action_shape`` give the Box shapes; ``wrong_shape_at`` returns a
    misshapen observation at that step.
    """

    def __init__(self, nan_at=None, nan_entry="observation", obs_shape=(3,), action_shape=(1,), wrong_shape_at=None,
                 discrete=False):
        self.observation_space = spaces.Box(-np.inf, np.inf, obs_shape, np.float32)
        self.action_space = spaces.Discrete(2) if discrete else spaces.Box(-1, 1, action_shape, np.float32)
        self.nan_at, self.nan_entry, self.wrong_shape_at = nan_at, nan_entry, wrong_shape_at
        self.life, self.x = 0, 0.0

    def obs(self):
        return np.full(self.observation_space.shape, self.x, np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = float(self.np_random.uniform(-1, 1))
        return self.obs(), {}

    def step(self, action):
        self.life += 1
        push = (2 * int(action) - 1) if isinstance(self.action_space, spaces.Discrete) else float(np.mean(action))
        self.x += 0.1 * push
        obs, reward = self.obs(), -abs(self.x)
        if self.life == self.nan_at:
            if self.nan_entry == "observation":
                obs[0] = np.nan
            else:
                reward = float("nan")
        if self.life == self.wrong_shape_at:
            obs = np.zeros(7, np.float32)
        return obs, reward, False, False, {}


class Unpicklable(Walk):
    """Holds a ctypes pointer, which pickle refuses with ValueError."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.handle = ctypes.pointer(ctypes.c_int(3))


gym.register("rlexp_test/Walk-v0", entry_point=Walk, max_episode_steps=20)
gym.register("rlexp_test/Unpicklable-v0", entry_point=Unpicklable, max_episode_steps=20)
gym.register("rlexp_test/Endless-v0", entry_point=Walk)  # no time limit
