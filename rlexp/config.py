"""The root config's schema: Hydra checks the types of the trainer's own keys against it.

Registered in Hydra's ConfigStore as ``rlexp_schema`` and listed first in ``conf/config.yaml``'s
defaults, so ``optim.lr=fast`` or ``seed=abc`` fail in Hydra, before anything is built.
Values live in ``conf/config.yaml`` (``MISSING`` here); ranges are checked in ``rlexp.validation``.

The group nodes (env, policy, loss, ...) are open dictionaries: their keys are the registry
entry's keyword arguments, which its builder checks, so a typo such as ``loss.clip_epsilom=0.1``
gets rlexp's message with the accepted keys instead of Hydra's "not in struct".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

GROUPS = ("env", "policy", "value_estimator", "loss", "replay_transform", "logger")


@dataclass
class CollectorConfig:
    total_frames: int = MISSING
    frames_per_batch: int = MISSING
    group_size: Optional[int] = MISSING


@dataclass
class OptimConfig:
    lr: float = MISSING
    eps: float = MISSING
    anneal_lr: bool = MISSING
    max_grad_norm: float = MISSING
    ppo_epochs: int = MISSING
    num_minibatches: int = MISSING
    sequence_length: int = MISSING


@dataclass
class CheckpointConfig:
    interval: int = MISSING
    keep: int = MISSING


@dataclass
class EvalConfig:
    interval: int = MISSING
    episodes: int = MISSING
    # Defaults here as well: a checkpoint written before these keys existed resumes with videos off.
    video: bool = False
    video_every: int = 5


@dataclass
class TrainerConfig:
    on_nan: str = MISSING  # raise | skip (checked in rlexp.validation: an Enum cannot have a member `raise`)


@dataclass
class RLExpConfig:
    experiment: str = MISSING
    seed: int = MISSING
    device: str = MISSING
    threads: int = MISSING
    imports: list[str] = MISSING
    resume: Optional[str] = None
    collector: CollectorConfig = field(default_factory=CollectorConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    env: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    value_estimator: dict[str, Any] = field(default_factory=dict)
    loss: dict[str, Any] = field(default_factory=dict)
    replay_transform: dict[str, Any] = field(default_factory=dict)
    logger: dict[str, Any] = field(default_factory=dict)


def schema():
    """The structured root config with its group nodes open to any key."""
    root = OmegaConf.structured(RLExpConfig)
    for group in GROUPS:
        OmegaConf.set_struct(root[group], False)
    return root


ConfigStore.instance().store(name="rlexp_schema", node=schema())
