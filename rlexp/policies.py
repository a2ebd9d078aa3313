"""The policy registry's built-in entries: actor and critic networks for an env's spaces.

A policy builder takes the env's single observation and action spaces and returns
``(actor, critic)``: a ``ProbabilisticTensorDictSequential`` that writes ``action`` and
``action_log_prob`` (and its distribution parameters, which KL-penalty PPO reads back) and a
``TensorDictModule`` that writes ``state_value``. Both read ``observation``.
"""

from __future__ import annotations

import math

import torch
from gymnasium import spaces
from tensordict.nn import (
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from torch import nn

from rlexp.modules.distributions import IndependentNormal, TanhNormal
from rlexp.registry import ConfigError, policies

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}
CONTINUOUS = {"normal": IndependentNormal, "tanh_normal": TanhNormal}


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


@policies.register("mlp")
def mlp_policy(observation_space: spaces.Box, action_space: spaces.Space, *,
               hidden_sizes: list[int] = (64, 64), activation: str = "tanh",
               distribution: str = "normal", log_std_init: float = 0.0, critic: bool = True,
               ) -> tuple[ProbabilisticTensorDictSequential, TensorDictModule | None]:
    """Separate actor and critic MLPs (CleanRL's PPO architecture); no critic with ``critic=False`` (GRPO).

    Discrete actions: categorical over logits. Box actions: ``distribution`` ``normal``
    (Independent Normal, the sample is clipped to the bounds only inside the env) or
    ``tanh_normal`` (squashed into the bounds, Monte-Carlo entropy).
    """
    obs_dim = int(math.prod(observation_space.shape))
    hidden_sizes = list(hidden_sizes)
    width = hidden_sizes[-1] if hidden_sizes else obs_dim

    if isinstance(action_space, spaces.Discrete):
        logits = nn.Sequential(mlp_trunk(obs_dim, hidden_sizes, activation),
                               orthogonal(nn.Linear(width, int(action_space.n)), 0.01))
        params = TensorDictModule(logits, in_keys=["observation"], out_keys=["logits"])
        head = ProbabilisticTensorDictModule(in_keys=["logits"], out_keys=["action"],
                                             distribution_class=torch.distributions.Categorical,
                                             return_log_prob=True)
    elif isinstance(action_space, spaces.Box):
        if distribution not in CONTINUOUS:
            raise ConfigError(f"policy.distribution={distribution!r}; choose one of: {', '.join(CONTINUOUS)}.")
        gaussian = GaussianHead(mlp_trunk(obs_dim, hidden_sizes, activation), width,
                                int(math.prod(action_space.shape)), log_std_init)
        params = TensorDictModule(gaussian, in_keys=["observation"], out_keys=["loc", "scale"])
        kwargs = {}
        if distribution == "tanh_normal":
            kwargs = {"low": torch.as_tensor(action_space.low), "high": torch.as_tensor(action_space.high)}
        head = ProbabilisticTensorDictModule(in_keys=["loc", "scale"], out_keys=["action"],
                                             distribution_class=CONTINUOUS[distribution],
                                             distribution_kwargs=kwargs, return_log_prob=True)
    else:
        raise ConfigError(f"policy 'mlp' does not support action space {action_space}; use Discrete or Box.")

    actor = ProbabilisticTensorDictSequential(params, head)
    if not critic:
        return actor, None
    value = nn.Sequential(mlp_trunk(obs_dim, hidden_sizes, activation), orthogonal(nn.Linear(width, 1), 1.0))
    return actor, TensorDictModule(value, in_keys=["observation"], out_keys=["state_value"])
