"""The ``gru`` policy entry: a GRU over observations feeding the actor and critic heads (recurrent PPO).

Both modules read ``observation``, a hidden state and ``is_init`` (see :class:`rlexp.modules.GRUModule`).
With ``shared_trunk`` one GRU (state ``recurrent_state``) feeds both heads, as in CleanRL's LSTM PPO;
otherwise actor and critic own a GRU each (states ``actor_state`` and ``critic_state``), and the
collector steps the critic too so that its states are stored in the rollout.
"""

from __future__ import annotations

import math

from gymnasium import spaces
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictSequential
from torch import nn

from rlexp.modules import GRUModule
from rlexp.policies.heads import action_head, mlp_trunk, value_head
from rlexp.registry import ConfigError, policies


def gru_trunk(in_features: int, hidden_size: int, num_layers: int, python_based: bool, name: str) -> GRUModule:
    """``observation`` -> ``<name>_features``, state ``<name>_state``; orthogonal weights, zero biases (CleanRL)."""
    module = GRUModule(in_features, hidden_size, num_layers=num_layers, python_based=python_based,
                       in_keys=["observation", f"{name}_state"],
                       out_keys=[f"{name}_features", ("next", f"{name}_state")])
    for param_name, param in module.gru.named_parameters():
        if param_name.startswith("weight"):
            nn.init.orthogonal_(param)
        else:
            nn.init.zeros_(param)
    return module


@policies.register("gru")
def gru_policy(observation_space: spaces.Box, action_space: spaces.Space, *, hidden_size: int = 64,
               num_layers: int = 1, head_sizes: list[int] = (64,), activation: str = "tanh",
               distribution: str = "auto", log_std_init: float = 0.0, shared_trunk: bool = False,
               python_based: bool = False, critic: bool = True,
               ) -> tuple[ProbabilisticTensorDictSequential, TensorDictSequential | None]:
    """GRU trunk(s) of ``hidden_size`` x ``num_layers``, then MLP heads of ``head_sizes``.

    ``critic=False`` builds the actor only (GRPO). ``python_based`` runs the GRU cell in plain
    PyTorch ops (same numbers, slower). ``distribution`` as in the ``mlp`` entry.
    """
    if hidden_size < 1 or num_layers < 1:
        raise ConfigError(f"policy.hidden_size and policy.num_layers must be >= 1, got {hidden_size}, {num_layers}.")
    obs_dim = int(math.prod(observation_space.shape))
    head_sizes = list(head_sizes)
    width = head_sizes[-1] if head_sizes else hidden_size
    actor_gru = gru_trunk(obs_dim, hidden_size, num_layers, python_based, "recurrent" if shared_trunk else "actor")
    actor = ProbabilisticTensorDictSequential(actor_gru, *action_head(
        action_space, actor_gru.out_keys[0], mlp_trunk(hidden_size, head_sizes, activation), width,
        distribution=distribution, log_std_init=log_std_init, policy="gru"))
    if not critic:
        return actor, None
    critic_gru = actor_gru if shared_trunk else gru_trunk(obs_dim, hidden_size, num_layers, python_based, "critic")
    value = value_head(critic_gru.out_keys[0], mlp_trunk(hidden_size, head_sizes, activation), width)
    return actor, TensorDictSequential(critic_gru, value)
