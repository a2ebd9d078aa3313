"""CleanRL's handling of time limits, as a user's env entry: a time-limit truncation reported as a termination.

At a truncation rlexp bootstraps from the true final observation; CleanRL's PPO scripts end the return
there (they treat ``terminated or truncated`` as done). Importing this module registers gymnasium ids
``<Env>TimeLimitTerminates-v4|v5`` for the four MuJoCo tasks of CleanRL's table, which report the
time limit as a termination, so rlexp runs CleanRL's variant with nothing in rlexp changed::

    python -m rlexp +experiment=cleanrl_mujoco env=walker2d \\
        imports=[experiments.benchmarks.time_limit_terminates] env.id=Walker2dTimeLimitTerminates-v4

Leave ``env.max_episode_steps`` unset: gymnasium would put a time limit of that length (which truncates)
around the wrapper too.
"""

from __future__ import annotations

import gymnasium as gym

TASKS = ("HalfCheetah", "Hopper", "Walker2d", "InvertedPendulum")


class TimeLimitTerminates(gym.Wrapper):
    """Reports the wrapped env's truncation (its time limit) as a termination."""

    def step(self, action):
        observation, reward, terminated, truncated, info = self.env.step(action)
        return observation, reward, terminated or truncated, False, info


def make(wrapped_id: str, **kwargs) -> gym.Env:
    """``gym.make(wrapped_id, **kwargs)`` (its time limit included) with truncations reported as terminations."""
    return TimeLimitTerminates(gym.make(wrapped_id, **kwargs))


for task in TASKS:
    for version in ("v4", "v5"):
        gym.register(f"{task}TimeLimitTerminates-{version}", entry_point=make,
                     kwargs={"wrapped_id": f"{task}-{version}"})
