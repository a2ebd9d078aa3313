"""Every check of the config that the trainer needs, one message each, before anything is built.

``validate_config``: types and ranges of the values the trainer reads, batch sizes the collector and
minibatching can honour, and the combinations of groups that would train something meaningless.
``check_sequence_length`` needs to know whether the built policy is recurrent, so the trainer calls
it right after building the networks, still before any env steps or the logger opens.
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
# numpy's global seed must be below 2**32; the envs are seeded with offsets added to it, so keep room
seed_range = (f"in [0, {2**31 - 1}]", lambda x: 0 <= x < 2**31)

ON_NAN = ("raise", "skip")

# key: (type, (description, predicate) or None)
RULES: dict[str, tuple[type, tuple[str, Callable[[float], bool]] | None]] = {
    "seed": (int, seed_range),
    "num_seeds": (int, at_least_one),
    "threads": (int, at_least_one),
    "collector.total_frames": (int, at_least_one),
    "collector.frames_per_batch": (int, at_least_one),
    "optim.lr": (float, positive),
    "optim.eps": (float, positive),
    "optim.max_grad_norm": (float, positive),
    "optim.ppo_epochs": (int, at_least_one),
    "optim.num_minibatches": (int, at_least_one),
    "optim.anneal_lr": (bool, None),
    "optim.compile": (bool, None),
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
    check_batch_sizes(cfg)
    check_replay_transform(cfg)
    if group_size and OmegaConf.select(cfg, "env.normalize.reward", default=False):
        raise ConfigError("env.normalize.reward=true cannot be combined with grouped episode collection "
                          "(collector.group_size, used by loss=grpo): GRPO standardises whole-episode returns within "
                          "each group, and a reward scale that moves during an episode would only distort that "
                          "comparison. Use env.normalize.reward=false (observation normalisation works).")
    check_num_seeds(cfg)
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


def check_batch_sizes(cfg: DictConfig) -> None:
    """Batch settings the collector and minibatching can honour."""
    frames_per_batch, num_envs, group_size = cfg.collector.frames_per_batch, cfg.env.num_envs, cfg.collector.group_size
    if group_size:
        if num_envs % group_size:
            raise ConfigError(f"collector.group_size={group_size} must divide env.num_envs={num_envs} "
                              "(each block of group_size envs is one group).")
        return
    if frames_per_batch % num_envs:
        raise ConfigError(f"collector.frames_per_batch={frames_per_batch} is not divisible by env.num_envs={num_envs}.")
    if frames_per_batch % cfg.optim.num_minibatches:
        raise ConfigError(f"collector.frames_per_batch={frames_per_batch} is not divisible by "
                          f"optim.num_minibatches={cfg.optim.num_minibatches}.")


def check_replay_transform(cfg: DictConfig) -> None:
    """The multi-step transform only with fixed-length rollouts and an estimator that bootstraps after one reward."""
    import rlexp.objectives.value  # noqa: F401  (registers the built-in value estimators)
    from rlexp.registry import value_estimators

    name = OmegaConf.select(cfg, "replay_transform.name", default="none")
    if name in (None, "none"):
        return
    if cfg.collector.group_size:
        raise ConfigError(f"replay_transform={name} cannot be combined with grouped episode collection "
                          "(collector.group_size, used by loss=grpo); use replay_transform=none.")
    estimator = value_estimators.get(cfg.value_estimator.name)
    if not getattr(estimator, "bootstraps_after_one_reward", False):
        raise ConfigError(
            f"replay_transform={name} writes n-step rewards, which only value_estimator=td0 bootstraps correctly "
            f"(as gamma**steps_to_next_obs); value_estimator={cfg.value_estimator.name} would sum rewards over "
            "steps twice. Use value_estimator=td0 or replay_transform=none.")
    n_steps, steps = OmegaConf.select(cfg, "replay_transform.n_steps", default=1), \
        cfg.collector.frames_per_batch // cfg.env.num_envs
    if is_kind(n_steps, int) and n_steps >= steps:
        raise ConfigError(f"replay_transform.n_steps={n_steps} must be smaller than the {steps} steps per env of a "
                          "rollout (collector.frames_per_batch / env.num_envs): the transform holds n_steps of them "
                          "back until the next rollout.")


def check_sequence_length(cfg: DictConfig, recurrent: bool) -> int | None:
    """``optim.sequence_length`` for a recurrent policy (checked against the rollout length), else None."""
    if not recurrent:
        return None
    length = cfg.optim.sequence_length or 0
    steps = cfg.collector.frames_per_batch // cfg.env.num_envs
    if length < 0 or (length and not cfg.collector.group_size and steps % length):
        raise ConfigError(f"optim.sequence_length={length} must be 0 (whole rows) or divide the rollout's "
                          f"{steps} steps per env (collector.frames_per_batch / env.num_envs).")
    if length and OmegaConf.select(cfg, "replay_transform.name", default="none") not in (None, "none"):
        raise ConfigError(f"optim.sequence_length={length} with replay_transform={cfg.replay_transform.name}: the "
                          "transform's first rollout is n_steps shorter than the others, so fixed-length sequences "
                          "do not fit every rollout. Use optim.sequence_length=0 (whole rows) with a recurrent policy.")
    return length


def check_num_seeds(cfg: DictConfig) -> None:
    """``num_seeds`` > 1 covers feed-forward policies without a replay transform; the rest is refused."""
    n = cfg.num_seeds
    if n == 1:
        return
    if cfg.replay_transform.get("name", "none") != "none":
        raise ConfigError(f"num_seeds={n} with replay_transform={cfg.replay_transform.name} is not supported: use "
                          "replay_transform=none, or run those seeds as a sweep (-m seed=...).")
    if cfg.eval.video:
        raise ConfigError(f"num_seeds={n} with eval.video=true is not supported: record videos in a run of one seed.")
    if cfg.optim.compile:
        raise ConfigError(f"num_seeds={n} with optim.compile=true is not supported: the seeds' update is already "
                          "batched; use optim.compile=false.")
