"""The logger interface the trainer talks to, and rlexp's own metrics file."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rlexp.signals import exit_code

METRICS_FILE = "metrics.jsonl"


@dataclass(frozen=True)
class RunInfo:
    """What every logger builder receives about the job: output folder, flat config, run id, name, group.

    ``continues_after`` is set when the job continues an earlier one (``resume=``, a requeued
    submitit job) from the checkpoint at that many frames: loggers continue the same run (same
    id) and drop what the earlier attempt recorded after that step, which the continuation logs again.
    """

    dir: Path
    config: Mapping[str, object]
    id: str
    name: str
    group: str
    continues_after: int | None = None


class Logger:
    """Receives scalar metrics and videos at a step (collected frames); a context manager that always finishes.

    Leaving the ``with`` block through an exception finishes the run with a non-zero exit code:
    128 + signal number for SIGTERM/SIGINT (``rlexp.signals``), else 1.
    """

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_video(self, key: str, path: Path, step: int) -> None:
        """An MP4 file already in the run folder; loggers that hold media (W&B) take it in, the others skip it."""

    def finish(self, exit_code: int = 0) -> None:
        pass

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code(exc))


class MetricsFile(Logger):
    """Appends one JSON object per log step to ``<run_dir>/metrics.jsonl``: ``{"frames": step, ...}``.

    ``continues_after``: first drop the lines after that step (a resumed run logs them again).
    """

    def __init__(self, run_dir: str | Path, continues_after: int | None = None):
        self.path = Path(run_dir) / METRICS_FILE
        if continues_after is not None and self.path.exists():
            lines = self.path.read_text().splitlines(keepends=True)
            rewrite_atomically(self.path, "".join(
                line for line in lines if line.endswith("\n") and json.loads(line)["frames"] <= continues_after))
        self._file = self.path.open("a")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._file.write(json.dumps({"frames": step, **metrics}) + "\n")
        self._file.flush()

    def finish(self, exit_code: int = 0) -> None:
        self._file.close()


def rewrite_atomically(path: Path, text: str) -> None:
    """Replace ``path``'s contents with ``text``; a kill midway leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Loggers(Logger):
    """Several loggers behind one."""

    def __init__(self, *loggers: Logger):
        self.loggers = loggers

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        for logger in self.loggers:
            logger.log(metrics, step)

    def log_video(self, key: str, path: Path, step: int) -> None:
        for logger in self.loggers:
            logger.log_video(key, path, step)

    def finish(self, exit_code: int = 0) -> None:
        for logger in self.loggers:
            logger.finish(exit_code)
