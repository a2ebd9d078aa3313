"""``python -m rlexp [overrides]``: compose the config with Hydra, train, log and checkpoint one job.

Returns the final mean evaluation return, which Hydra sweepers (Optuna) maximise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import os
import secrets
import string
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
import numpy as np
from omegaconf import DictConfig, OmegaConf

import rlexp.config
import rlexp.sweep
from rlexp.checkpoint import CheckpointError, CheckpointWriteError, held_run_folder, latest_resumable, run_folder
from rlexp.registry import ConfigError
from rlexp.signals import Interrupted, stop_on_signals
from rlexp.sweep import FailedJob

if TYPE_CHECKING:  # rlexp.loggers is imported inside train_job, once the config is composed
    from rlexp.loggers import Logger, RunInfo

# overrides a resume accepts: none changes the numbers, except device (CPU and CUDA round differently)
SAFE_ON_RESUME = ("collector.total_frames", "checkpoint.interval", "checkpoint.keep", "eval.video", "eval.video_every",
                  "device")


def main() -> None:
    """``python -m rlexp``: one run, or a sweep (``-m``) that runs every job, then lists them and exits with
    code 1 if any failed."""
    try:
        task()
    except KeyboardInterrupt as err:  # a signal to the basic launcher's process stops the whole sweep
        sys.exit(err.exit_code if isinstance(err, Interrupted) else 130)
    finally:
        failed = rlexp.sweep.summarize()
    if failed:
        sys.exit(1)


# The command line composes the same config as rlexp.config.compose_config, through Hydra's entry point
# (which adds multirun, launchers and sweepers).
@hydra.main(version_base="1.3", config_path=str(rlexp.config.CONF_DIR), config_name="config")
def task(cfg: DictConfig) -> float | FailedJob:
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return sweep_job(cfg, hydra_cfg)
    try:
        return run(cfg, hydra_cfg)
    except REPORTED as err:
        code, message = reported(err)
        print(f"rlexp: {message}", file=sys.stderr)
        sys.exit(code)


def sweep_job(cfg: DictConfig, hydra_cfg: DictConfig) -> float | FailedJob:
    """One job of a multirun: its final evaluation return, or, whatever stopped it, a ``FailedJob`` after
    recording the error and exit code in its folder (the sweep goes on with the other jobs)."""
    folder, num, overrides = Path(hydra_cfg.runtime.output_dir), hydra_cfg.job.num, list(hydra_cfg.overrides.task)
    try:
        value = run(cfg, hydra_cfg)
    except (Exception, KeyboardInterrupt) as err:
        if isinstance(err, REPORTED):
            code, message = reported(err)
            print(f"rlexp: job {num}: {message}", file=sys.stderr)
        else:  # a bug, in rlexp or a user's code: keep its traceback
            code, message = 1, f"{type(err).__name__}: {err}"
            traceback.print_exc()
        rlexp.sweep.record_job(folder, num, overrides, code, message)
        if isinstance(err, KeyboardInterrupt) and rlexp.sweep.launched_here():
            raise
        return FailedJob(code, message)
    rlexp.sweep.record_job(folder, num, overrides, 0, eval_return=value)
    return value


# errors that rlexp reports in one line, without a traceback
REPORTED = (ConfigError, CheckpointWriteError, KeyboardInterrupt, FloatingPointError)


def reported(err: BaseException) -> tuple[int, str]:
    """The exit code and one-line message of an error in ``REPORTED``."""
    if isinstance(err, ConfigError):
        return 2, f"configuration error: {err}"
    if isinstance(err, CheckpointWriteError):
        return 1, f"{err.strerror} (training stopped; the checkpoints written before it are intact)"
    if isinstance(err, Interrupted):
        return err.exit_code, f"{err}, exiting with code {err.exit_code}"
    if isinstance(err, KeyboardInterrupt):  # Ctrl-C before training started: nothing to save yet
        return 130, "interrupted before training started, exiting with code 130"
    return 3, f"training stopped: {err}"  # rlexp.trainer.NonFiniteLoss, rlexp.envs.EnvFault


def run(cfg: DictConfig, hydra_cfg: DictConfig) -> float:
    """Train one job (``hydra_cfg``: the job's Hydra config) and return its final evaluation return."""
    run_dir, requeue_id = Path(hydra_cfg.runtime.output_dir), requeue_run_id(hydra_cfg)
    if cfg.resume is not None:
        cfg, run_dir, checkpoint = resumed_run(cfg, hydra_cfg)
    else:
        checkpoint = requeue_checkpoint(run_dir) if requeue_id else None
    with held_run_folder(run_dir, continuing=cfg.resume is not None or requeue_id is not None):
        return train_job(cfg, hydra_cfg, run_dir, requeue_id, checkpoint)


def train_job(cfg: DictConfig, hydra_cfg: DictConfig, run_dir: Path, requeue_id: str | None,
              checkpoint: dict | None) -> float:
    """Train in ``run_dir``, which this run holds, from ``checkpoint`` if any."""
    import_user_modules(cfg.imports)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    if cfg.resume is None:  # a resumed run uses its checkpoint's config, whose choices are not recomposed
        for line in rlexp.config.describe_settings(cfg, hydra_cfg.runtime.choices):
            print(f"rlexp: {line}", file=sys.stderr)

    from rlexp.loggers import RunInfo
    from rlexp.registry import loggers
    from rlexp.trainer import train

    identity = {"id": requeue_id or new_run_id(), "name": run_name(cfg, hydra_cfg), "group": run_group(cfg, hydra_cfg)}
    if checkpoint is not None:  # the same run continues (W&B: same id, name and group)
        identity |= checkpoint["run"]
    # a requeued job without a checkpoint yet starts over, in the same W&B run
    continues_after = checkpoint["frames"] if checkpoint is not None else (0 if requeue_id else None)
    info = RunInfo(dir=run_dir, config=flat_config(cfg, hydra_cfg), continues_after=continues_after, **identity)
    make_logger = (lambda: loggers.build(cfg.logger, info)) if cfg.num_seeds == 1 else \
        (lambda: seed_loggers(cfg, hydra_cfg, info))
    with stop_on_signals() as stop:
        result = train(cfg, run_dir, make_logger=make_logger, run=identity, resume=checkpoint, stop=stop)
    return float(np.mean(result["eval/episode_return"]))  # the mean over seeds when several


def seed_loggers(cfg: DictConfig, hydra_cfg: DictConfig, info: RunInfo) -> Logger:
    """``num_seeds`` > 1: each seed an ordinary run of its own in ``<run>/seed<k>/`` (its config, overrides and
    metrics; a W&B run in the job's group, named after the job and the seed)."""
    from rlexp.registry import loggers
    from rlexp.seeds import SeedLoggers

    built = []
    overrides = [o for o in hydra_cfg.overrides.task if o.split("=", 1)[0].lstrip("+~") not in ("seed", "num_seeds")]
    try:
        for k in range(cfg.num_seeds):
            seed = cfg.seed + k
            folder = info.dir / f"seed{seed}"
            (folder / ".hydra").mkdir(parents=True, exist_ok=True)
            seed_cfg = OmegaConf.merge(cfg, {"seed": seed})
            OmegaConf.save(seed_cfg, folder / "config.yaml", resolve=True)
            OmegaConf.save(OmegaConf.create([*overrides, f"seed={seed}"]), folder / ".hydra" / "overrides.yaml")
            config = {**info.config, "seed": seed}
            built.append(loggers.build(cfg.logger, dataclasses.replace(
                info, dir=folder, config=config, id=f"{info.id}-{k}", name=f"{info.name} seed={seed}",
                concurrent=True)))
    except BaseException:
        for logger in built:
            logger.abandon()
        raise
    return SeedLoggers(built)


def resumed_run(cfg: DictConfig, hydra_cfg: DictConfig) -> tuple[DictConfig, Path, dict]:
    """The checkpoint's own config (plus the overrides that cannot change the numbers), folder and contents."""
    path, checkpoint = latest_resumable(cfg.resume)
    overrides = [o for o in OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
                 if o.key_or_group != "resume"]
    unsafe = [o.input_line for o in overrides if o.key_or_group not in SAFE_ON_RESUME]
    if unsafe:
        raise ConfigError(f"resume={cfg.resume} continues that run with its own config, and {', '.join(unsafe)} "
                          f"would change it. On resume only {', '.join(SAFE_ON_RESUME)} may be overridden; "
                          "to try other settings, start a new run.")
    resumed = OmegaConf.merge(rlexp.config.schema(), checkpoint["config"])
    for override in overrides:
        OmegaConf.update(resumed, override.key_or_group, OmegaConf.select(cfg, override.key_or_group))
    resumed.resume = str(path)
    print(f"rlexp: resuming {run_folder(path)} from {path.name} at {checkpoint['frames']:,} frames", file=sys.stderr)
    return resumed, run_folder(path), checkpoint


def requeue_checkpoint(run_dir: Path) -> dict | None:
    """The newest intact checkpoint of a requeued job's earlier attempts, if any."""
    try:
        return latest_resumable(run_dir)[1]
    except CheckpointError:
        return None


def new_run_id() -> str:
    """A fresh run id in W&B's format (8 lowercase letters and digits)."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def import_user_modules(modules: list[str]) -> None:
    """Import the modules listed under ``imports:`` so their registry entries exist."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if module == err.name or module.startswith(f"{err.name}."):
                raise ConfigError(f"imports: cannot import {module!r} ({err}). List importable module paths, "
                                  "e.g. imports: [my_package.my_losses], with the package on PYTHONPATH.") from None
            raise ConfigError(f"imports: {module!r} was found, but it imports {err.name!r}, which is not "
                              f"installed ({err}). Install it or fix that import.") from None


def run_name(cfg: DictConfig, hydra_cfg: DictConfig) -> str:
    """The job's overrides, e.g. ``loss=grpo,seed=1``, minus the ``+experiment=`` preset the group names already;
    the experiment name without any."""
    overrides = OverridesParser.create().parse_overrides(list(hydra_cfg.overrides.task))
    return ",".join(o.input_line for o in overrides if o.key_or_group != "experiment") or cfg.experiment


def run_group(cfg: DictConfig, hydra_cfg: DictConfig) -> str:
    """The experiment name, plus the sweep folder's time stamp under ``-m`` so each sweep is one group."""
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return f"{cfg.experiment}-{Path(hydra_cfg.sweep.dir).name}"
    return cfg.experiment


def requeue_run_id(hydra_cfg: DictConfig) -> str | None:
    """A run id shared by every attempt of a submitit job (its output folder and scheduler job id), else None.

    submitit re-runs a preempted or timed-out job in the same folder under the same job id; with
    this id its W&B run continues instead of a new one starting, and training resumes from the
    job's newest checkpoint (or starts over if it has none yet).
    """
    if not os.environ.get("SUBMITIT_EXECUTOR"):  # the variable submitit sets in the processes of its jobs
        return None
    job = f"{Path(hydra_cfg.runtime.output_dir).resolve()}|{hydra_cfg.job.id}"
    return hashlib.sha256(job.encode()).hexdigest()[:16]


def flat_config(cfg: DictConfig, hydra_cfg: DictConfig) -> dict[str, object]:
    """The resolved config with dotted keys (filterable in W&B's run table), which option set each key of
    another group (``set_by/<key>``), plus the job's Hydra facts."""
    flat = rlexp.config.flatten(OmegaConf.to_container(cfg, resolve=True))
    for source, settings in rlexp.config.cross_group_settings(cfg, hydra_cfg.runtime.choices).items():
        flat |= {f"set_by/{key}": source for key in settings}
    flat["hydra/overrides"] = list(hydra_cfg.overrides.task)
    flat["hydra/job_num"] = hydra_cfg.job.get("num")
    flat["hydra/output_dir"] = hydra_cfg.runtime.output_dir
    return flat


if __name__ == "__main__":
    main()
