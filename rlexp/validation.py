"""Range checks of the config values the trainer reads, before anything is built, one message each.

The types of the trainer's own keys are checked by Hydra against ``rlexp.config``'s schema; group
options (env, policy, loss, ...) by their builders through the registry. The group keys listed
here (env size, discount factors) are read by the trainer too, so their type is checked here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from omegaconf import DictConfig, OmegaConf

from rlexp.registry import ConfigError

positive = ("> 0", lambda x: x > 0)
at_least_one = (">= 1", lambda x: x >= 1)
non_negative = (">= 0", lambda x: x >= 0)
unit_interval_open_left = ("in (0, 1]", lambda x: 0 < x <= 1)
unit_interval = ("in [0, 1]", lambda x: 0 <= x <= 1)

ON_NAN = ("raise", "skip")

# key: (type, (description, predicate) or None)
RULES: dict[str, tuple[type, tuple[str, Callable[[float], bool]] | None]] = {
    "seed": (int, non_negative),
    "threads": (int, at_least_one),
    "collector.total_frames": (int, at_least_one),
    "collector.frames_per_batch": (int, at_least_one),
    "optim.lr": (float, positive),
    "optim.eps": (float, positive),
    "optim.max_grad_norm": (float, positive),
    "optim.ppo_epochs": (int, at_least_one),
    "optim.num_minibatches": (int, at_least_one),
    "optim.anneal_lr": (bool, None),
    "eval.interval": (int, at_least_one),
    "checkpoint.interval": (int, at_least_one),
    "checkpoint.keep": (int, at_least_one),
    "eval.episodes": (int, at_least_one),
    "eval.video": (bool, None),
    "eval.video_every": (int, at_least_one),
    "env.num_envs": (int, at_least_one),
    "value_estimator.gamma": (float, unit_interval_open_left),
    "value_estimator.lmbda": (float, unit_interval),
}


def validate_config(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value has the wrong type or is out of range."""
    for key, (kind, rule) in RULES.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is None:
            continue
        if not is_kind(value, kind):
            raise ConfigError(f"{key}={value!r} must be {'an integer' if kind is int else 'a ' + kind.__name__}"
                              f"{'' if rule is None else ' ' + rule[0]}.")
        if rule is not None and not rule[1](value):
            raise ConfigError(f"{key}={value!r} is out of range: it must be {rule[0]}.")
    group_size = OmegaConf.select(cfg, "collector.group_size", default=None)
    if group_size is not None and not (is_kind(group_size, int) and group_size >= 2):
        raise ConfigError(f"collector.group_size={group_size!r} must be null or an integer >= 2.")
    if cfg.trainer.on_nan not in ON_NAN:
        raise ConfigError(f"trainer.on_nan={cfg.trainer.on_nan!r}; choose one of: {', '.join(ON_NAN)}.")


def is_kind(value: object, kind: type) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind is int:
        return isinstance(value, int)
    return isinstance(value, (int, float)) and math.isfinite(value)
