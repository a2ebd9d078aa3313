"""Same-step autoreset for gymnasium's numpy-vectorised CartPole.

``CartPoleVectorEnv`` only offers next-step autoreset: the step after an episode ends ignores its
action and returns the reset observation with reward 0, which wastes a frame per episode and puts a
non-transition into the rollout. This adapter resets finished sub-environments in the same step,
from the same initial-state distribution and the env's own RNG, so every step is a real transition.
"""

from __future__ import annotations

import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import AutoresetMode, VectorWrapper


class CartPoleSameStepReset(VectorWrapper):
    """Returns the reset observation for finished envs and their final one in ``info["final_obs"]``."""

    def __init__(self, env: CartPoleVectorEnv):
        super().__init__(env)
        self.metadata = {**env.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}

    def reset(self, *, seed: int | list[int] | None = None, options=None):
        """``seed`` may be a list with one seed per sub-env: equal seeds give equal initial states, and the
        env's RNG (which draws the later resets) is seeded from the whole list, so those resets repeat too."""
        if not isinstance(seed, (list, tuple)):
            return self.env.reset(seed=seed, options=options)
        obs, info = self.env.reset(seed=int(np.random.SeedSequence(list(seed)).generate_state(1)[0]), options=options)
        env = self.env.unwrapped
        for i, sub_seed in enumerate(seed):
            env.state[:, i] = np.random.default_rng(sub_seed).uniform(low=env.low, high=env.high, size=4)
        return env.state.T.astype(np.float32), info

    def step(self, actions):
        obs, reward, terminated, truncated, info = self.env.step(actions)
        done = terminated | truncated
        if done.any():
            env = self.env.unwrapped
            info = {**info, "final_obs": obs.copy(), "_final_obs": done}
            env.state[:, done] = env.np_random.uniform(low=env.low, high=env.high, size=(4, int(done.sum())))
            env.steps[done] = 0
            env.prev_done[:] = False
            obs = env.state.T.astype(np.float32)
        return obs, reward, terminated, truncated, info
