"""Generalized Advantage Estimation (Schulman et al. 2016) as a tensordict module."""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModuleBase

from rlexp.objectives.value.base import ValueEstimatorBase, _standardize
from rlexp.objectives.value.functional import generalized_advantage_estimate
from rlexp.registry import value_estimators


@value_estimators.register("gae")
class GAE(ValueEstimatorBase):
    """``A_t = delta_t + gamma lmbda (1 - done_t) A_{t+1}``, ``value_target = A + V``.

    ``average_gae`` standardises the advantage after the value target is formed.
    ``auto_reset_env`` folds truncation bootstraps into the reward (``r + gamma V truncated``)
    and then treats every ``done`` as terminal. ``vectorized`` and ``deactivate_vmap`` are accepted
    for torchrl parity without effect on the numbers: rlexp always uses its log-depth scan (equal to
    the loop up to float rounding) and calls the value network on a stacked root/next batch.
    """

    _missing_value_error = ValueError

    def __init__(self, *, gamma: float | torch.Tensor, lmbda: float | torch.Tensor,
                 value_network: TensorDictModuleBase | None, average_gae: bool = False,
                 differentiable: bool = False, vectorized: bool | None = None,
                 skip_existing: bool | None = None, advantage_key=None, value_target_key=None,
                 value_key=None, shifted: bool = False, device: torch.device | None = None,
                 time_dim: int | None = None, auto_reset_env: bool = False, deactivate_vmap: bool = False):
        super().__init__(value_network=value_network, differentiable=differentiable,
                         skip_existing=skip_existing, time_dim=time_dim, advantage_key=advantage_key,
                         value_target_key=value_target_key, value_key=value_key, device=device, shifted=shifted)
        self._scalar_buffer("gamma", gamma)
        self._scalar_buffer("lmbda", lmbda)
        self.average_gae = average_gae
        self.vectorized = vectorized
        self.auto_reset_env = auto_reset_env
        self.deactivate_vmap = deactivate_vmap

    def _estimate(self, tensordict, value, next_value, reward, done, terminated, time_dim):
        gamma = self._gamma(tensordict, reward)
        if self.auto_reset_env:
            truncated = tensordict["next", "truncated"]
            reward = reward + gamma * value * truncated
            terminated = done
        advantage, value_target = generalized_advantage_estimate(
            gamma, self.lmbda, value, next_value, reward, done, terminated, time_dim=time_dim)
        if self.average_gae:
            advantage = _standardize(advantage, 1e-4)
        return advantage, value_target
