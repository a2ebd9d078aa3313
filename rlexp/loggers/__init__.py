"""Loggers: the ``logger`` config group. Every entry but ``none`` writes ``metrics.jsonl``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from rlexp.loggers.base import METRICS_FILE, Logger, Loggers, MetricsFile
from rlexp.loggers.csv_logger import CsvFile
from rlexp.loggers.wandb_logger import WandbRun
from rlexp.registry import loggers

__all__ = ["METRICS_FILE", "Logger", "Loggers", "MetricsFile", "CsvFile", "WandbRun"]


@loggers.register("wandb")
def wandb_logger(*, run_dir: Path, config: Mapping, name: str, group: str, project: str = "rlexp",
                 entity: str | None = None, tags: Sequence[str] = (), mode: str | None = None) -> Logger:
    """W&B run (``mode``: online | offline | disabled; unset = offline without an API key)."""
    run = WandbRun(run_dir=run_dir, config=config, name=name, group=group, project=project,
                   entity=entity, tags=tags, mode=mode)
    return Loggers(MetricsFile(run_dir), run)


@loggers.register("csv")
def csv_logger(*, run_dir: Path, config: Mapping, name: str, group: str) -> Logger:
    """Local files only: ``metrics.jsonl`` and the long-format ``metrics.csv``."""
    return Loggers(MetricsFile(run_dir), CsvFile(run_dir))


@loggers.register("none")
def no_logger(*, run_dir: Path, config: Mapping, name: str, group: str) -> Logger:
    """Nothing is recorded (the progress bar still shows the run)."""
    return Logger()
