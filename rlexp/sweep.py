"""Multiruns that survive failed jobs: each job records how it ended, the sweep goes on, a summary ends it.

Under ``-m`` a job that fails (configuration error, non-finite stop, exception, SIGTERM/SIGINT in its
own process) does not leave its task function by ``sys.exit`` or an exception, which would end the
sweep (the basic sweeper and Optuna re-raise a failed job's exception; ``SystemExit`` kills joblib's
workers and submitit's result). It writes ``job.json`` into its folder and returns a ``FailedJob``:
launchers pass it back like any result, and Optuna, which cannot read it as a number, tells the
study that the trial failed. The sweep's own process then prints one line per job and exits with
code 1 if any job failed.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

JOB_FILE = "job.json"


@dataclass(frozen=True)
class FailedJob:
    """A failed job's result. Not a number on purpose: Optuna records the trial as failed, not with a value."""

    exit_code: int
    error: str

    def __str__(self) -> str:
        return f"job failed with exit code {self.exit_code}: {self.error}"


def record_job(folder: Path, num: int, overrides: Sequence[str], exit_code: int, error: str | None = None,
               eval_return: float | None = None) -> None:
    """Write the job's ``job.json``: its number, overrides, exit code, error and final evaluation return."""
    status = "completed" if exit_code == 0 else "failed"
    record = {"job": num, "overrides": list(overrides), "status": status, "exit_code": exit_code, "error": error,
              "eval/episode_return": eval_return}
    (folder / JOB_FILE).write_text(json.dumps(record, indent=1) + "\n")


class Launch(Callback):
    """Hydra callback (``hydra.callbacks`` in conf/config.yaml), run before Hydra writes anything: the output
    folder must be writable (one line instead of Hydra's traceback), and a sweep is noted for its summary."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(config.hydra.run.dir), "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        check_writable(Path(config.hydra.sweep.dir), "hydra.sweep.dir")
        SWEEP.update(dir=Path(config.hydra.sweep.dir), start=time.time(), pid=os.getpid())


def check_writable(folder: Path, key: str) -> None:
    """Create ``folder`` and a file in it, or exit with code 1 naming the folder and the OS's reason."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as err:
        print(f"rlexp: cannot write to the output folder {folder} ({err.strerror or err}); choose another with "
              f"{key}=<folder>", file=sys.stderr)
        sys.exit(1)


SWEEP: dict[str, Any] = {}  # the sweep launched by this process: dir, start (epoch seconds), pid


def launched_here() -> bool:
    """True in the process that launched the sweep (the basic launcher runs its jobs there): a signal it
    receives is meant for the whole sweep."""
    return SWEEP.get("pid") == os.getpid()


def job_records() -> list[dict]:
    """The ``job.json`` of every job of this process's sweep (those written since it started), by job number."""
    if not SWEEP:
        return []
    files = [path for path in SWEEP["dir"].rglob(JOB_FILE) if path.stat().st_mtime >= SWEEP["start"] - 1]
    return sorted((json.loads(path.read_text()) for path in files), key=lambda record: record["job"])


def summarize() -> int:
    """Print one line per job of the sweep launched here (the overrides that differ between jobs, the status,
    the final evaluation return or the error); return the number of failed jobs (0 without a sweep)."""
    records = job_records()
    if not records:  # no sweep, or none of its jobs ran (Hydra refused an override and said why)
        return 0
    failed = sum(record["status"] != "completed" for record in records)
    print(f"rlexp: sweep {SWEEP['dir']}: {len(records)} jobs, {len(records) - failed} completed, {failed} failed "
          f"({JOB_FILE} in each job's folder)", file=sys.stderr)
    shared = set.intersection(*(set(record["overrides"]) for record in records)) if len(records) > 1 else set()
    for record in records:
        overrides = " ".join(o for o in record["overrides"] if o not in shared)
        if record["status"] == "completed":
            outcome = f"completed  eval/episode_return={record['eval/episode_return']:.2f}"
        else:
            outcome = f"failed (exit code {record['exit_code']})  {record['error']}"
        print(f"  job {record['job']}  {overrides}  {outcome}", file=sys.stderr)
    return failed
