"""Environments: gymnasium vector envs speaking tensordict in torchrl's layout."""

from rlexp.envs.gym import make_gym_env
from rlexp.envs.tensordict_env import TensorDictVectorEnv

__all__ = ["TensorDictVectorEnv", "make_gym_env"]
