"""The policy registry's built-in entries: actor and critic networks for an env's spaces.

A policy builder takes the env's single observation and action spaces and returns
``(actor, critic)``: a ``ProbabilisticTensorDictSequential`` that writes ``action`` and
``action_log_prob`` (and its distribution parameters, which KL-penalty PPO reads back) and a
module that writes ``state_value`` (None with ``critic=False``). Both read ``observation``;
recurrent entries also read their hidden states and ``is_init`` (see ``recurrent``).
"""

from rlexp.policies.gru import gru_policy
from rlexp.policies.heads import GaussianHead, mlp_trunk, orthogonal
from rlexp.policies.mlp import mlp_policy
from rlexp.policies.recurrent import RecurrentStates, gru_modules, rollout_policy

__all__ = ["GaussianHead", "RecurrentStates", "gru_modules", "gru_policy", "mlp_policy", "mlp_trunk", "orthogonal",
           "rollout_policy"]
