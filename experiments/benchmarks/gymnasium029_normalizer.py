"""CleanRL's normalisation semantics (gymnasium 0.29's wrappers) in place of rlexp's, for a benchmark config.

CleanRL's ``ppo_continuous_action.py`` normalises inside each env with gymnasium 0.29's
``NormalizeObservation`` and ``NormalizeReward``. They differ from rlexp's ``Normalizer`` (SB3's
``VecNormalize`` semantics) in two ways, shown number by number by ``cleanrl_lockstep.py``:

* every observation the wrapper passes enters the running statistics, so an episode's final
  observation counts as well as the next episode's first one; rlexp counts only the observations the
  policy acts on;
* the return whose std scales rewards is ``R = gamma * R * (1 - terminated) + r``: restarted *at* a
  termination (before adding its reward), never at a truncation; rlexp restarts it after every end.

Importing this module swaps those two behaviours into rlexp's training envs (evaluation envs, which
never update statistics, are unchanged), so the preset runs with CleanRL's semantics::

    python -m rlexp +experiment=cleanrl_mujoco env=walker2d imports=[experiments.benchmarks.gymnasium029_normalizer]

It patches rlexp's classes for the whole process: a benchmark diagnostic, not a user option.
With ``GYMNASIUM029_SCALE_LOG=<file>`` it appends, every 10,000 steps, the reward scale it uses and
the one rlexp's semantics would have given on the same stream.
"""

from __future__ import annotations

import json
import os

import numpy as np

from rlexp.envs import Normalizer, RunningMeanStd, TensorDictVectorEnv
from rlexp.registry import ConfigError

SCALE_LOG = os.environ.get("GYMNASIUM029_SCALE_LOG")
_rlexp_step = TensorDictVectorEnv.step_and_maybe_reset


def step_and_maybe_reset(self: TensorDictVectorEnv, step):
    """rlexp's step, with the training normaliser told which envs terminated and fed the final observations
    first (gymnasium 0.29's order: the final observation, then the reset's)."""
    normalizer = self.normalizer
    if normalizer is None or not normalizer.update:
        return _rlexp_step(self, step)
    vector_step = self.env.step

    def step_seen_by_the_wrappers(action):
        obs, reward, terminated, truncated, info = result = vector_step(action)
        normalizer.terminated = terminated.copy()
        ended = terminated | truncated
        if ended.any() and normalizer.obs_rms is not None:
            normalizer.obs_rms.update(np.stack(info["final_obs"][ended]))
        return result

    self.env.step = step_seen_by_the_wrappers
    try:
        return _rlexp_step(self, step)
    finally:
        del self.env.step  # the class's method again: the env pickles (checkpoints) as before


def rewards(self: Normalizer, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
    """Scale by the running std of gymnasium 0.29's discounted return (one group of envs, as in CleanRL)."""
    if self.return_rms is None:
        return reward
    if self.groups > 1:
        raise ConfigError("experiments.benchmarks.gymnasium029_normalizer: one seed per process (num_seeds=1), "
                          "as in CleanRL.")
    self.returns = self.returns * self.config.gamma * (1 - self.terminated) + reward
    self.return_rms.update(self.returns)
    std = np.sqrt(self.return_rms.var + self.config.epsilon)
    if SCALE_LOG:
        log_scales(self, reward, done, std)
    return np.clip(reward / std, -self.config.clip_reward, self.config.clip_reward).astype(np.float32)


def log_scales(self: Normalizer, reward: np.ndarray, done: np.ndarray, std: float) -> None:
    """Track rlexp's return (restarted after every end) beside gymnasium's; log both stds now and then."""
    if not hasattr(self, "rlexp_rms"):
        self.rlexp_rms, self.rlexp_returns, self.steps = RunningMeanStd(()), np.zeros_like(self.returns), 0
    self.rlexp_returns = self.rlexp_returns * self.config.gamma + reward
    self.rlexp_rms.update(self.rlexp_returns)
    self.rlexp_returns[done] = 0.0
    self.steps += 1
    if self.steps % 10_000 == 0:
        with open(SCALE_LOG, "a") as log:
            log.write(json.dumps({"step": self.steps, "std_gymnasium029": float(std),
                                  "std_rlexp": float(np.sqrt(self.rlexp_rms.var + self.config.epsilon))}) + "\n")


TensorDictVectorEnv.step_and_maybe_reset = step_and_maybe_reset
Normalizer.rewards = rewards
