"""``logger=wandb``: one W&B run per training job, offline unless an API key is configured."""

from __future__ import annotations

import netrc
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlparse

from rlexp.loggers.base import Logger
from rlexp.registry import ConfigError

MODES = ("online", "offline", "disabled")
ALIASES = {"dryrun": "offline", "run": "online"}  # older names that W&B still accepts for WANDB_MODE


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
    if mode is not None:
        source = f"logger.mode={mode!r}"
    elif os.environ.get("WANDB_MODE"):
        mode = os.environ["WANDB_MODE"]
        source = f"the environment variable WANDB_MODE={mode!r}"
    else:
        return "online" if api_key_configured() else "offline"
    mode = ALIASES.get(mode, mode)
    if mode not in MODES:
        raise ConfigError(f"{source}; choose one of: {', '.join(MODES)} (or W&B's aliases "
                          f"{', '.join(f'{old} = {new}' for old, new in ALIASES.items())}).")
    return mode


class WandbRun(Logger):
    """Logs every metric at W&B step = collected frames, so train, loss and eval never collide.

    ``reinit="finish_previous"``: a worker process that runs several jobs (basic launcher, joblib, Ray)
    gets one run per job even if a previous job left its run open; ``concurrent`` runs (the seeds of a
    ``num_seeds`` job) are created side by side instead. With ``resume`` the run
    ``run_id`` is continued (a resumed or requeued job); W&B drops the steps it already has, which
    the exact continuation would only log again with the same values.
    """

    name = "W&B"

    def __init__(self, *, run_dir: str | Path, config: Mapping, run_id: str, name: str, group: str, project: str,
                 entity: str | None, tags: Sequence[str], mode: str | None, init_timeout: float = 30.0,
                 job_type: str = "train", resume: bool = False, concurrent: bool = False):
        import wandb  # imported here: W&B costs start-up time that logger=csv/none runs do not pay

        mode = resolve_mode(mode)
        options = dict(project=project, entity=entity, name=name, group=group, tags=list(tags), job_type=job_type,
                       config=dict(config), dir=str(run_dir), id=run_id,
                       reinit="create_new" if concurrent else "finish_previous",
                       resume="allow" if resume else None)
        try:
            self.run = wandb.init(**options, mode=mode, settings=wandb.Settings(init_timeout=init_timeout))
        except Exception as err:  # noqa: BLE001  (no server, no network, a refused key: train offline instead)
            if mode != "online":
                raise
            print(f"rlexp: W&B could not start online within logger.init_timeout={init_timeout:g} s "
                  f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); logging offline "
                  f"instead (upload later: wandb sync {run_dir}/wandb/offline-run-*)", file=sys.stderr)
            wandb.teardown()  # the service still holds the run id that the online attempt registered
            self.run = wandb.init(**options, mode="offline")
        self.run.define_metric("frames")
        self.run.define_metric("*", step_metric="frames")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self.run.log({**metrics, "frames": step}, step=step)

    def log_video(self, key: str, path: Path, step: int) -> None:
        import wandb

        self.run.log({key: wandb.Video(str(path), format="mp4"), "frames": step}, step=step)

    def finish(self, exit_code: int = 0) -> None:
        self.run.finish(exit_code=exit_code)

    def abandon(self) -> None:
        """Forget the W&B service (dead or unreachable), so that the process does not wait for it or print its
        traceback at exit; what the service had not written yet is lost, the run folder's files are not."""
        import wandb

        try:
            wandb.teardown()  # unregisters W&B's exit hook first, then fails to reach the service
        except (Exception, SystemExit):  # noqa: BLE001  (W&B exits with the service's error code)
            pass
