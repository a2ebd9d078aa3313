"""Network pieces shared by the policy entries: MLP trunks, orthogonal init and the action/value heads.

An actor head turns features into the distribution parameters (``logits`` or ``loc, scale``) and
samples ``action`` with ``action_log_prob``; a value head turns features into ``state_value``.
"""

from __future__ import annotations

import math

import torch
from gymnasium import spaces
from tensordict.nn import ProbabilisticTensorDictModule, TensorDictModule
from tensordict.utils import NestedKey
from torch import nn

from rlexp.modules.distributions import IndependentNormal, MultiCategorical, TanhNormal
from rlexp.registry import ConfigError

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}
CONTINUOUS = {"normal": IndependentNormal, "tanh_normal": TanhNormal}
DISTRIBUTIONS = ("auto", "categorical", *CONTINUOUS)


def mlp_trunk(in_features: int, hidden_sizes: list[int], activation: str) -> nn.Sequential:
    """Hidden layers with orthogonal init (gain sqrt 2) and zero bias, as in CleanRL's PPO."""
    if activation not in ACTIVATIONS:
        raise ConfigError(f"policy.activation={activation!r}; choose one of: {', '.join(ACTIVATIONS)}.")
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [orthogonal(nn.Linear(in_features, size), math.sqrt(2)), ACTIVATIONS[activation]()]
        in_features = size
    return nn.Sequential(*layers)


def orthogonal(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class GaussianHead(nn.Module):
    """Mean from the trunk, state-independent learned log-std: returns ``(loc, scale)``."""

    def __init__(self, trunk: nn.Module, in_features: int, action_dim: int, log_std_init: float):
        super().__init__()
        self.trunk = trunk
        self.loc = orthogonal(nn.Linear(in_features, action_dim), 0.01)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc = self.loc(self.trunk(observation))
        return loc, self.log_std.exp().expand_as(loc)


def action_head(action_space: spaces.Space, in_key: NestedKey, trunk: nn.Module, width: int, *,
                distribution: str, log_std_init: float, policy: str,
                ) -> tuple[TensorDictModule, ProbabilisticTensorDictModule]:
    """``(params, sampler)`` reading ``in_key`` through ``trunk`` (output ``width``).

    Discrete actions: categorical over logits. MultiDiscrete actions: one categorical per dimension
    (``MultiCategorical``, log-probs summed), from one linear layer of ``sum(nvec)`` logits. Box
    actions: ``normal`` (Independent Normal, the sample is clipped to the bounds only inside the env)
    or ``tanh_normal`` (squashed into the bounds, Monte-Carlo entropy). ``auto`` picks categorical or
    normal from the action space.
    """
    discrete = isinstance(action_space, (spaces.Discrete, spaces.MultiDiscrete))
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(f"policy.distribution={distribution!r}; choose one of: {', '.join(DISTRIBUTIONS)}.")
    if distribution != "auto" and discrete != (distribution == "categorical"):
        kind = "discrete actions: use auto or categorical" if discrete else "continuous actions: use auto, " + \
            ", ".join(CONTINUOUS)
        raise ConfigError(f"policy.distribution={distribution} does not fit the env's action space {action_space} "
                          f"({kind}).")
    if isinstance(action_space, spaces.MultiDiscrete):
        nvec = [int(n) for n in action_space.nvec]
        logits = nn.Sequential(trunk, orthogonal(nn.Linear(width, sum(nvec)), 0.01))
        params = TensorDictModule(logits, in_keys=[in_key], out_keys=["logits"])
        sampler = ProbabilisticTensorDictModule(in_keys=["logits"], out_keys=["action"],
                                                distribution_class=MultiCategorical,
                                                distribution_kwargs={"nvec": nvec}, return_log_prob=True)
        return params, sampler
    if discrete:
        logits = nn.Sequential(trunk, orthogonal(nn.Linear(width, int(action_space.n)), 0.01))
        params = TensorDictModule(logits, in_keys=[in_key], out_keys=["logits"])
        sampler = ProbabilisticTensorDictModule(in_keys=["logits"], out_keys=["action"],
                                                distribution_class=torch.distributions.Categorical,
                                                return_log_prob=True)
        return params, sampler
    if not isinstance(action_space, spaces.Box):
        raise ConfigError(f"policy {policy!r} does not support action space {action_space}; use Discrete, "
                          "MultiDiscrete or Box.")
    distribution = "normal" if distribution == "auto" else distribution
    gaussian = GaussianHead(trunk, width, int(math.prod(action_space.shape)), log_std_init)
    params = TensorDictModule(gaussian, in_keys=[in_key], out_keys=["loc", "scale"])
    kwargs = {}
    if distribution == "tanh_normal":
        kwargs = {"low": torch.as_tensor(action_space.low), "high": torch.as_tensor(action_space.high)}
    sampler = ProbabilisticTensorDictModule(in_keys=["loc", "scale"], out_keys=["action"],
                                            distribution_class=CONTINUOUS[distribution],
                                            distribution_kwargs=kwargs, return_log_prob=True)
    return params, sampler


def value_head(in_key: NestedKey, trunk: nn.Module, width: int) -> TensorDictModule:
    """``state_value`` from ``in_key`` through ``trunk`` and a linear output (gain 1)."""
    value = nn.Sequential(trunk, orthogonal(nn.Linear(width, 1), 1.0))
    return TensorDictModule(value, in_keys=[in_key], out_keys=["state_value"])
