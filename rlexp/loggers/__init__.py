"""Loggers: the ``logger`` config group. Every entry but ``none`` writes ``metrics.jsonl``.

A builder takes the job's ``RunInfo`` plus its config keys and returns a ``Logger``.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlexp.loggers.base import METRICS_FILE, Logger, Loggers, MetricsFile, RunInfo
from rlexp.loggers.csv_logger import CsvFile
from rlexp.loggers.wandb_logger import WandbRun
from rlexp.registry import loggers

__all__ = ["METRICS_FILE", "Logger", "Loggers", "MetricsFile", "RunInfo", "CsvFile", "WandbRun"]


@loggers.register("wandb")
def wandb_logger(run: RunInfo, *, project: str = "rlexp", entity: str | None = None, group: str | None = None,
                 tags: Sequence[str] = (), mode: str | None = None, init_timeout: float = 30.0) -> Logger:
    """Metrics file plus a W&B run (``mode``: online | offline | disabled; unset: offline without an API key).
    Online, a server that does not answer within ``init_timeout`` seconds leaves the run offline."""
    if init_timeout <= 0:
        raise ValueError(f"logger.init_timeout={init_timeout!r} must be a number of seconds > 0.")
    metrics = MetricsFile(run.dir, run.continues_after)  # first: a damaged file is dealt with before W&B resumes
    wandb_run = WandbRun(run_dir=run.dir, config=run.config, run_id=run.id, name=run.name, group=group or run.group,
                         project=project, entity=entity, tags=tags, mode=mode, init_timeout=init_timeout,
                         resume=run.continues_after is not None, concurrent=run.concurrent)
    return Loggers(metrics, wandb_run)


@loggers.register("csv")
def csv_logger(run: RunInfo) -> Logger:
    """Local files only: ``metrics.jsonl`` and the long-format ``metrics.csv``."""
    return Loggers(MetricsFile(run.dir, run.continues_after), CsvFile(run.dir, run.continues_after))


@loggers.register("none")
def no_logger(run: RunInfo) -> Logger:
    """Nothing is recorded (the progress bar still shows the run)."""
    return Logger()
