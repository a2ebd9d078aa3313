"""The logger interface the trainer talks to, and rlexp's own metrics file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rlexp.signals import exit_code

METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class RunInfo:
    """What every logger builder receives about the job: output folder, flat config, name, group.

    ``resume_id`` is set when the job may be requeued (submitit): every attempt shares it, so a
    logger continues the same run instead of starting a new one.
    """

    dir: Path
    config: Mapping[str, object]
    name: str
    group: str
    resume_id: str | None = None


class Logger:
    """Receives scalar metrics at a step (collected frames); a context manager that always finishes.

    Leaving the ``with`` block through an exception finishes the run with a non-zero exit code:
    128 + signal number for SIGTERM/SIGINT (``rlexp.signals``), else 1.
    """

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code(exc))


class MetricsFile(Logger):
    """Appends one JSON object per log step to ``<run_dir>/metrics.jsonl``: ``{"frames": step, ...}``."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / METRICS_FILE
        self._file = self.path.open("a")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._file.write(json.dumps({"frames": step, **metrics}) + "\n")
        self._file.flush()

    def finish(self, exit_code: int = 0) -> None:
        self._file.close()


class Loggers(Logger):
    """Several loggers behind one."""

    def __init__(self, *loggers: Logger):
        self.loggers = loggers

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

    def finish(self, exit_code: int = 0) -> None:
        for logger in self.loggers:
            logger.finish(exit_code)
