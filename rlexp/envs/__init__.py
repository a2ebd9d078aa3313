"""Environments: gymnasium vector envs speaking tensordict's keys in torchrl's layout."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlexp.envs.gym import make_gym_env
from rlexp.envs.normalize import NormalizeConfig, Normalizer, RunningMeanStd
from rlexp.envs.tensordict_env import EnvFault, Step, TensorDictVectorEnv, stack_steps
from rlexp.registry import ConfigError, envs


def normalize_config(config: Mapping[str, Any] | None) -> NormalizeConfig:
    """``env.normalize`` as a checked ``NormalizeConfig`` (absent: nothing normalised)."""
    try:
        return NormalizeConfig(**(config or {}))
    except TypeError:
        accepted = ", ".join(NormalizeConfig.__dataclass_fields__)
        raise ConfigError(f"env.normalize has unknown keys {sorted(set(config) - set(NormalizeConfig.__dataclass_fields__))}"
                          f"; accepted: {accepted}.") from None


def build_env(config: Mapping[str, Any], num_envs: int | None = None, *,
              evaluation: bool = False, groups: int = 1) -> TensorDictVectorEnv:
    """The env registry's entry for ``config``, with ``env.normalize`` applied around it.

    ``env.normalize`` is not a builder keyword: every env, a user's own included, is normalised
    the same way. A training env gets statistics of its own. An evaluation env gets none: it reads
    a frozen copy of the training statistics, given (and refreshed) by ``freeze_statistics``.
    ``groups``: the sub-envs form that many consecutive blocks, each normalised with statistics of its own.
    """
    if isinstance(config, DictConfig):
        config = OmegaConf.to_container(config, resolve=True)
    config = dict(config)
    normalize = normalize_config(config.pop("normalize", None))
    if num_envs is not None:
        config["num_envs"] = num_envs
    env = envs.build(config)
    if normalize.enabled and not evaluation:
        env.normalizer = Normalizer(normalize, env.observation_space.shape, env.num_envs, groups=groups)
    return env


__all__ = ["EnvFault", "NormalizeConfig", "Normalizer", "RunningMeanStd", "Step", "TensorDictVectorEnv", "build_env",
           "make_gym_env", "normalize_config", "stack_steps"]
