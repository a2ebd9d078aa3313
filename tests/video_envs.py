"""Envs that cannot give evaluation videos, for the ``eval.video=true`` checks (listed under ``imports:``).

``AnsiOnly-v0`` is a gymnasium env that renders text only; ``fixed_cartpole`` an rlexp env builder
with no ``render_mode`` option; ``cartpole_ignoring_render_mode`` one that takes the option and drops it.
"""

import gymnasium as gym
import numpy as np

from rlexp.envs.gym import make_gym_env
from rlexp.registry import envs


class AnsiOnly(gym.Env):
    """One step per episode, observation zeros, drawn as text."""

    metadata = {"render_modes": ["ansi"]}
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode: str | None = None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 1.0, True, False, {}

    def render(self):
        return "ansi-only"


gym.register("AnsiOnly-v0", entry_point=AnsiOnly)


@envs.register("fixed_cartpole")
def fixed_cartpole(num_envs: int = 4):
    return make_gym_env(id="CartPole-v1", num_envs=num_envs)


@envs.register("cartpole_ignoring_render_mode")
def cartpole_ignoring_render_mode(num_envs: int = 4, render_mode: str | None = None):
    return make_gym_env(id="CartPole-v1", num_envs=num_envs)
