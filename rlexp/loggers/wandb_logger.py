"""``logger=wandb``: one W&B run per training job, offline unless an API key is configured."""

from __future__ import annotations

import netrc
import os
import sys
import threading
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

    W&B starts in a background thread (importing wandb and starting its service take about 1.5 s), so
    training begins at once; what is logged before the run is up waits in order and goes first, and
    ``finish`` waits for the start. A start that fails surfaces at the next call, which ``Loggers``
    reports by dropping W&B while ``metrics.jsonl`` goes on. Starts run one at a time (a
    ``num_seeds`` job starts one W&B run per seed).

    ``reinit="finish_previous"``: a worker process that runs several jobs (basic launcher, joblib, Ray)
    gets one run per job even if a previous job left its run open; ``concurrent`` runs (the seeds of a
    ``num_seeds`` job) are created side by side instead. With ``resume`` the run ``run_id`` is
    continued (a resumed or requeued job); W&B drops the steps it already has, which the exact
    continuation would only log again with the same values.
    """

    name = "W&B"
    _starting = threading.Lock()

    def __init__(self, *, run_dir: str | Path, config: Mapping, run_id: str, name: str, group: str, project: str,
                 entity: str | None, tags: Sequence[str], mode: str | None, init_timeout: float = 30.0,
                 job_type: str = "train", resume: bool = False, concurrent: bool = False):
        mode = resolve_mode(mode)  # a bad mode is a configuration error, raised here
        options = dict(project=project, entity=entity, name=name, group=group, tags=list(tags), job_type=job_type,
                       config=dict(config), dir=str(run_dir), id=run_id,
                       reinit="create_new" if concurrent else "finish_previous",
                       resume="allow" if resume else None)
        self.run, self._error, self._pending = None, None, []
        self._thread = threading.Thread(target=self._start, args=(options, mode, init_timeout, run_dir),
                                        name=f"wandb-start-{run_id}", daemon=True)
        self._thread.start()

    def _start(self, options: dict, mode: str, init_timeout: float, run_dir: str | Path) -> None:
        try:
            with self._starting:
                import wandb  # imported here: W&B costs start-up time that logger=csv/none runs do not pay

                try:
                    run = wandb.init(**options, mode=mode, settings=wandb.Settings(init_timeout=init_timeout))
                except Exception as err:  # noqa: BLE001  (no server, no network, a refused key: offline instead)
                    if mode != "online":
                        raise
                    print(f"rlexp: W&B could not start online within logger.init_timeout={init_timeout:g} s "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); logging "
                          f"offline instead (upload later: wandb sync {run_dir}/wandb/offline-run-*)", file=sys.stderr)
                    wandb.teardown()  # the service still holds the run id that the online attempt registered
                    run = wandb.init(**options, mode="offline")
                run.define_metric("frames")
                run.define_metric("*", step_metric="frames")
                self.run = run
        except BaseException as err:  # noqa: BLE001  (handed to the caller at its next call)
            self._error = err

    def _started(self):
        """The W&B run, once started, with what waited logged first; raises the start's error."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        pending, self._pending = self._pending, []
        for metrics, step in pending:
            self.run.log({**metrics, "frames": step}, step=step)
        return self.run

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        if self._thread.is_alive():
            self._pending.append((dict(metrics), step))
            return
        self._started().log({**metrics, "frames": step}, step=step)

    def log_video(self, key: str, path: Path, step: int) -> None:
        import wandb

        self._started().log({key: wandb.Video(str(path), format="mp4"), "frames": step}, step=step)

    def finish(self, exit_code: int = 0) -> None:
        self._started().finish(exit_code=exit_code)

    def abandon(self) -> None:
        """Forget the W&B service (dead or unreachable), so that the process does not wait for it or print its
        traceback at exit; what the service had not written yet is lost, the run folder's files are not."""
        import wandb

        try:
            wandb.teardown()  # unregisters W&B's exit hook first, then fails to reach the service
        except (Exception, SystemExit):  # noqa: BLE001  (W&B exits with the service's error code)
            pass
