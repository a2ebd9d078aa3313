"""Environments: gymnasium vector envs speaking tensordict's keys in torchrl's layout."""

from rlexp.envs.gym import make_gym_env
from rlexp.envs.tensordict_env import Step, TensorDictVectorEnv, stack_steps

__all__ = ["Step", "TensorDictVectorEnv", "make_gym_env", "stack_steps"]
