"""The ``mlp`` policy entry: separate feed-forward actor and critic (CleanRL's PPO architecture)."""

from __future__ import annotations

import math

from gymnasium import spaces
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule

from rlexp.policies.heads import action_head, mlp_trunk, value_head
from rlexp.registry import policies


@policies.register("mlp")
def mlp_policy(observation_space: spaces.Box, action_space: spaces.Space, *,
               hidden_sizes: list[int] = (64, 64), activation: str = "tanh",
               distribution: str = "auto", log_std_init: float = 0.0, critic: bool = True,
               ) -> tuple[ProbabilisticTensorDictSequential, TensorDictModule | None]:
    """Separate actor and critic MLPs reading ``observation``; no critic with ``critic=False`` (GRPO).

    ``distribution`` picks the action distribution (see :func:`rlexp.policies.heads.action_head`).
    """
    obs_dim = int(math.prod(observation_space.shape))
    hidden_sizes = list(hidden_sizes)
    width = hidden_sizes[-1] if hidden_sizes else obs_dim
    actor = ProbabilisticTensorDictSequential(*action_head(
        action_space, "observation", mlp_trunk(obs_dim, hidden_sizes, activation), width,
        distribution=distribution, log_std_init=log_std_init, policy="mlp"))
    if not critic:
        return actor, None
    return actor, value_head("observation", mlp_trunk(obs_dim, hidden_sizes, activation), width)
