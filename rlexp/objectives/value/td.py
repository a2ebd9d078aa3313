"""Temporal-difference estimators: TD(0), TD(1) and TD(lambda) as tensordict modules."""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModuleBase

from rlexp.objectives.utils import inherit_keywords
from rlexp.objectives.value.base import ValueEstimatorBase, _standardize
from rlexp.objectives.value.functional import (
    td0_return_estimate,
    td1_return_estimate,
    td_lambda_return_estimate,
)
from rlexp.registry import value_estimators


class _TDEstimator(ValueEstimatorBase):
    """Constructor and ``average_rewards`` handling shared by the TD family.

    ``average_rewards`` standardises the rewards (and, like torchrl, writes them back into the
    rollout) before the returns are computed. ``deactivate_vmap`` (and TD(lambda)'s ``vectorized``)
    are accepted for torchrl parity and do not change the numbers.
    """

    _reward_min_std = 1e-5

    def __init__(self, *, gamma: float | torch.Tensor, value_network: TensorDictModuleBase | None,
                 average_rewards: bool = False, differentiable: bool = False, skip_existing: bool | None = None,
                 advantage_key=None, value_target_key=None, value_key=None, device: torch.device | None = None,
                 time_dim: int | None = None, deactivate_vmap: bool = False, shifted: bool = False):
        super().__init__(value_network=value_network, differentiable=differentiable,
                         skip_existing=skip_existing, time_dim=time_dim, advantage_key=advantage_key,
                         value_target_key=value_target_key, value_key=value_key, device=device, shifted=shifted)
        self._scalar_buffer("gamma", gamma)
        self.average_rewards = average_rewards
        self.deactivate_vmap = deactivate_vmap

    def _estimate(self, tensordict, value, next_value, reward, done, terminated, time_dim):
        if self.average_rewards:
            reward = _standardize(reward, self._reward_min_std)
            tensordict.set(("next", self._tensor_keys.reward), reward)
        value_target = self._returns(self._gamma(tensordict, reward), next_value, reward, done, terminated,
                                     time_dim)
        return value_target - value, value_target


@value_estimators.register("td0")
class TD0Estimator(_TDEstimator):
    """One-step bootstrapped return ``G_t = r_t + gamma (1 - terminated_t) V'_t``."""

    bootstraps_after_one_reward = True

    def _returns(self, gamma, next_value, reward, done, terminated, time_dim):
        return td0_return_estimate(gamma, next_value, reward, terminated)


@value_estimators.register("td1")
class TD1Estimator(_TDEstimator):
    """Discounted reward sum to the end of each trajectory, bootstrapped at truncations and the window end."""

    def _returns(self, gamma, next_value, reward, done, terminated, time_dim):
        return td1_return_estimate(gamma, next_value, reward, done, terminated, time_dim=time_dim)


@value_estimators.register("td_lambda")
class TDLambdaEstimator(_TDEstimator):
    """TD(lambda) return, the exponentially weighted mix of n-step returns (rewards standardised with std >= 1e-4)."""

    _reward_min_std = 1e-4

    @inherit_keywords(_TDEstimator.__init__)
    def __init__(self, *, gamma: float | torch.Tensor, lmbda: float | torch.Tensor,
                 value_network: TensorDictModuleBase | None, vectorized: bool = True, **kwargs):
        super().__init__(gamma=gamma, value_network=value_network, **kwargs)
        self._scalar_buffer("lmbda", lmbda)
        self.vectorized = vectorized

    def _returns(self, gamma, next_value, reward, done, terminated, time_dim):
        return td_lambda_return_estimate(gamma, self.lmbda, next_value, reward, done, terminated,
                                         time_dim=time_dim)
