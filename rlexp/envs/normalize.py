"""Observation and reward normalisation with running statistics, applied where env steps enter rlexp.

Observations: ``clip((obs - mean) / sqrt(var + eps), -clip, clip)`` with the running mean and
variance of every observation the training envs produced. Rewards: ``clip(r / sqrt(var_R + eps))``
with the running variance of the discounted return ``R_t = gamma * R_{t-1} + r_t``, accumulated per
env and restarted when its episode ends (terminated or truncated), as in SB3's ``VecNormalize``.

Statistics are updated by training envs only (``update=True``). Evaluation reads a frozen copy of
the training statistics (``Normalizer.frozen_copy``), so an evaluation never moves them.

``groups``: the sub-envs form that many equal, consecutive blocks with statistics of their own (the
seeds of a ``num_seeds`` run share one vector env, each seed its own block).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rlexp.registry import ConfigError


class RunningMeanStd:
    """Mean and (population) variance of a stream of batches, merged with the parallel formula.

    Starts at mean 0, variance 1 and a count of ``epsilon``, so the first batch dominates at once
    and a division by the variance is defined before any update.
    """

    def __init__(self, shape: tuple[int, ...], epsilon: float = 1e-4):
        self.mean = np.zeros(shape, np.float64)
        self.var = np.ones(shape, np.float64)
        self.count = float(epsilon)

    def update(self, batch: np.ndarray, axis: int = 0) -> None:
        """Merge a batch whose ``axis`` indexes samples (one per env); the other axes are the statistics' shape."""
        batch = np.asarray(batch, np.float64)
        n = batch.shape[axis]
        # batch.mean(axis) and batch.var(axis), number for number, without their wrappers' checks (a few
        # microseconds each, paid twice per env step)
        batch_mean = np.add.reduce(batch, axis) / n
        centered = batch - np.expand_dims(batch_mean, axis)
        batch_var = np.add.reduce(centered * centered, axis) / n
        total = self.count + n
        delta = batch_mean - self.mean
        # Chan et al.: M2 of the union = M2_a + M2_b + delta^2 * n_a * n_b / (n_a + n_b)
        m2 = self.var * self.count + batch_var * n + delta**2 * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.var = m2 / total
        self.count = total

    def state_dict(self) -> dict:
        return {"mean": self.mean.copy(), "var": self.var.copy(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.mean, self.var, self.count = state["mean"].copy(), state["var"].copy(), float(state["count"])


@dataclass
class NormalizeConfig:
    """``env.normalize``: which entries are normalised, their clip ranges and the return discount."""

    observation: bool = False
    reward: bool = False
    clip_observation: float = 10.0
    clip_reward: float = 10.0
    gamma: float = 0.99
    epsilon: float = 1e-8

    def __post_init__(self):
        for key in ("observation", "reward"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"env.normalize.{key}={getattr(self, key)!r} must be true or false.")
        for key in ("clip_observation", "clip_reward", "epsilon"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"env.normalize.{key}={value!r} must be a number > 0.")
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, (int, float)) or not 0 < self.gamma <= 1:
            raise ConfigError(f"env.normalize.gamma={self.gamma!r} must be in (0, 1].")

    @property
    def enabled(self) -> bool:
        return self.observation or self.reward


class Normalizer:
    """Running-statistics normalisation of one vector env's observations and rewards.

    ``update`` decides whether the statistics learn from what passes through: True for training
    envs, False for a frozen copy used in evaluation.
    """

    def __init__(self, config: NormalizeConfig, observation_shape: tuple[int, ...], num_envs: int,
                 update: bool = True, groups: int = 1):
        if num_envs % groups:
            raise ValueError(f"{num_envs} envs do not split into {groups} equal groups.")
        self.config, self.update, self.groups = config, update, groups
        per_group = (groups,) if groups > 1 else ()  # one group: the plain shapes
        self.obs_rms = RunningMeanStd((*per_group, *observation_shape)) if config.observation else None
        self.return_rms = RunningMeanStd(per_group) if config.reward else None
        self.returns = np.zeros(num_envs, np.float64)  # the discounted return so far, per env

    @classmethod
    def from_state_dict(cls, config: dict | None, env_state: dict) -> Normalizer | None:
        """The training normaliser saved in a checkpoint's env state (``None`` if the run normalised nothing)."""
        state = env_state.get("normalizer")
        if state is None:
            return None
        shape = state["obs_rms"]["mean"].shape if state["obs_rms"] is not None else ()
        normalizer = cls(NormalizeConfig(**(config or {})), shape, num_envs=len(state["returns"]))
        normalizer.load_state_dict(state)
        return normalizer

    def observations(self, obs: np.ndarray, *also: np.ndarray) -> tuple[np.ndarray, ...]:
        """Normalise ``obs`` (after merging it into the statistics) and ``also`` with the same statistics.

        ``also`` holds the final observations of episodes that ended in this step, so a truncated
        step bootstraps from its true final observation on the same scale as the step's others.
        """
        if self.obs_rms is None:
            return (obs, *also)
        if self.update:
            self.obs_rms.update(self._by_group(obs), axis=self._axis)
        mean, std, clip = self.obs_rms.mean, np.sqrt(self.obs_rms.var + self.config.epsilon), self.config.clip_observation
        return tuple(np.clip((self._by_group(x) - self._by_group(mean, stats=True)) / self._by_group(std, stats=True),
                             -clip, clip).astype(np.float32).reshape(x.shape) for x in (obs, *also))

    @property
    def _axis(self) -> int:
        return 1 if self.groups > 1 else 0

    def _by_group(self, values: np.ndarray, stats: bool = False) -> np.ndarray:
        """Per-env ``values`` as ``[groups, envs per group, ...]``; a group's statistics broadcast over its envs."""
        if self.groups == 1:
            return values
        return values[:, None] if stats else values.reshape(self.groups, -1, *values.shape[1:])

    def rewards(self, reward: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Scale by the running std of the discounted return; restart the return of envs whose episode ended."""
        if self.return_rms is None:
            return reward
        self.returns = self.returns * self.config.gamma + reward
        if self.update:
            self.return_rms.update(self._by_group(self.returns), axis=self._axis)
        std = self._by_group(np.sqrt(self.return_rms.var + self.config.epsilon), stats=True)
        scaled = np.clip(self._by_group(reward) / std, -self.config.clip_reward, self.config.clip_reward).reshape(
            reward.shape)
        self.returns[done] = 0.0
        return scaled.astype(np.float32)

    def reset_returns(self) -> None:
        self.returns[:] = 0.0

    def frozen_copy(self, num_envs: int) -> Normalizer:
        """The current statistics for ``num_envs`` evaluation envs, never updated; rewards pass unscaled."""
        config = NormalizeConfig(**{**vars(self.config), "reward": False})
        shape = self.obs_rms.mean.shape[self._axis:] if self.obs_rms else ()
        copy = Normalizer(config, shape, num_envs, update=False, groups=self.groups)
        if self.obs_rms is not None:
            copy.obs_rms.load_state_dict(self.obs_rms.state_dict())
        return copy

    def state_dict(self) -> dict:
        return {"obs_rms": self.obs_rms.state_dict() if self.obs_rms else None,
                "return_rms": self.return_rms.state_dict() if self.return_rms else None,
                "returns": self.returns.copy()}

    def load_state_dict(self, state: dict) -> None:
        for name in ("obs_rms", "return_rms"):
            rms = getattr(self, name)
            if (rms is None) != (state[name] is None):
                raise ConfigError(f"the checkpoint's env.normalize statistics ({name}) do not match the config.")
            if rms is not None:
                rms.load_state_dict(state[name])
        self.returns = state["returns"].copy()
