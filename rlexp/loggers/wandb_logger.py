"""``logger=wandb``: one W&B run per training job, offline unless an API key is configured."""

from __future__ import annotations

import netrc
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

from rlexp.loggers.base import Logger
from rlexp.registry import ConfigError

MODES = ("online", "offline", "disabled")


def api_key_configured() -> bool:
    """True if W&B has an API key: ``WANDB_API_KEY`` or a netrc entry (``$NETRC`` or ~/.netrc) for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc(os.environ.get("NETRC")).authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def resolve_mode(mode: str | None) -> str:
    """Explicit ``logger.mode``, else ``WANDB_MODE``, else online with an API key, else offline."""
    mode = mode or os.environ.get("WANDB_MODE") or ("online" if api_key_configured() else "offline")
    if mode not in MODES:
        raise ConfigError(f"logger.mode={mode!r}; choose one of: {', '.join(MODES)}.")
    return mode


class WandbRun(Logger):
    """Logs every metric at W&B step = collected frames, so train, loss and eval never collide.

    ``reinit="finish_previous"``: a worker process that runs several jobs (basic launcher, joblib, Ray)
    gets one run per job even if a previous job left its run open. With ``resume`` the run
    ``run_id`` is continued (a resumed or requeued job); W&B drops the steps it already has, which
    the exact continuation would only log again with the same values.
    """

    def __init__(self, *, run_dir: str | Path, config: Mapping, run_id: str, name: str, group: str, project: str,
                 entity: str | None, tags: Sequence[str], mode: str | None, job_type: str = "train",
                 resume: bool = False):
        import wandb  # imported here: W&B costs start-up time that logger=csv/none runs do not pay

        self.run = wandb.init(
            project=project, entity=entity, name=name, group=group, tags=list(tags), job_type=job_type,
            config=dict(config), dir=str(run_dir), mode=resolve_mode(mode), reinit="finish_previous",
            id=run_id, resume="allow" if resume else None,
        )
        self.run.define_metric("frames")
        self.run.define_metric("*", step_metric="frames")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log({**metrics, "frames": step}, step=step)

    def log_video(self, key: str, path: Path, step: int) -> None:
        import wandb

        self.run.log({key: wandb.Video(str(path), format="mp4"), "frames": step}, step=step)

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)
