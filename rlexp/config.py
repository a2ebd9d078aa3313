"""The root config: its schema, the resolvers it uses, and ``compose_config``, which composes it in-process.

The schema lets Hydra check the types of the trainer's own keys.

Registered in Hydra's ConfigStore as ``rlexp_schema`` and listed first in ``conf/config.yaml``'s
defaults, so ``optim.lr=fast`` or ``seed=abc`` fail in Hydra, before anything is built.
Values live in ``conf/config.yaml`` (``MISSING`` here); ranges are checked in ``rlexp.validation``.

The group nodes (env, policy, loss, ...) are open dictionaries: their keys are the registry
entry's keyword arguments, which its builder checks, so a typo such as ``loss.clip_epsilom=0.1``
gets rlexp's message with the accepted keys instead of Hydra's "not in struct".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parent.parent  # the source checkout: conf/ and experiments/ live beside rlexp/
CONF_DIR = ROOT / "conf"
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
    compile: bool = False  # a default here as well: checkpoints from before this key resume eager


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
    num_seeds: int = MISSING
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


def _run_dir(resume: str | None, new: str) -> str:
    from rlexp.checkpoint import run_folder  # imports torch; only a resumed run needs it

    return str(run_folder(resume)) if resume and Path(resume).exists() else new


# conf/config.yaml adds experiments/ to Hydra's search path through rlexp_root, so presets load as
# +experiment=<name> wherever the command is launched from. resume=<run or checkpoint> continues in that
# run's folder (rlexp_run_dir), leaving its .hydra/ record as it was (rlexp_output_subdir).
OmegaConf.register_new_resolver("rlexp_root", lambda: str(ROOT), replace=True)
OmegaConf.register_new_resolver("rlexp_run_dir", _run_dir, replace=True)
OmegaConf.register_new_resolver("rlexp_output_subdir", lambda resume: None if resume else ".hydra", replace=True)


def compose_config(*overrides: str, hydra: bool = False) -> DictConfig:
    """The config ``python -m rlexp <overrides>`` runs with, composed in-process by Hydra's compose API.

    ``hydra=True`` keeps Hydra's own node (launcher, sweeper, run folder) under the ``hydra`` key.
    """
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


# Where group options live: conf/<group>/<option>.yaml, and presets under experiments/.
CONFIG_DIRS = (CONF_DIR, ROOT / "experiments")
SETTING_GROUPS = (*GROUPS, "tuned")


def option_file(group: str, option: str) -> Path | None:
    return next((d / group / f"{option}.yaml" for d in CONFIG_DIRS if (d / group / f"{option}.yaml").is_file()), None)


def settings_of(group: str, option: str) -> tuple[list[Path], dict[str, Any]]:
    """The files of a global-package group option (its own defaults first) and the dotted keys they set
    outside the group itself; nothing for an option packaged under its group."""
    path = option_file(group, option)
    if path is None or "@package _global_" not in path.read_text().split("\n", 1)[0]:
        return [], {}
    node = OmegaConf.load(path)
    files, settings = [], {}
    for parent in node.pop("defaults", []) or []:
        if isinstance(parent, str) and not parent.startswith(("override ", "/")):
            parent_files, parent_settings = settings_of(group, parent)
            files += parent_files
            settings |= parent_settings
    flat = flatten(OmegaConf.to_container(node))
    files.append(path)
    settings |= {key: value for key, value in flat.items() if group == "tuned" or not key.startswith(f"{group}.")}
    return files, settings


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; an empty mapping below the top stays a value."""
    if isinstance(node, dict) and (node or not prefix):
        return {k: v for key, value in node.items() for k, v in flatten(value, f"{prefix}{key}.").items()}
    return {prefix[:-1]: node}


def cross_group_settings(cfg: DictConfig, choices: Mapping[str, str | None]) -> dict[str, dict[str, Any]]:
    """For each chosen option that sets keys of other groups (``conf/tuned/<env>.yaml``, ``loss=grpo``,
    ``policy=gru`` ...): ``{"<group>=<option> (<files>)": {key: value in the run}}``.

    These settings depend on the order of the defaults list and are invisible on the command line,
    so the run prints them at its start and records them in its logged config.
    """
    report = {}
    for group in SETTING_GROUPS:
        option = choices.get(group)
        if not option:
            continue
        files, settings = settings_of(group, option)
        if settings:
            names = ", ".join(str(f.relative_to(f.parents[2])) for f in files)
            report[f"{group}={option} ({names})"] = {
                key: OmegaConf.select(cfg, key, default=None) for key in settings}
    return report


def describe_settings(cfg: DictConfig, choices: Mapping[str, str | None]) -> list[str]:
    """One line per option of ``cross_group_settings``, naming the keys whose file value was overridden."""
    lines = []
    for source, settings in cross_group_settings(cfg, choices).items():
        group, option = source.split(" ", 1)[0].split("=")
        own = settings_of(group, option)[1]
        parts = [f"{key}={value}" + ("" if value == own[key] else f" (file: {own[key]}, overridden)")
                 for key, value in settings.items()]
        lines.append(f"{source} sets {', '.join(parts)}")
    return lines
