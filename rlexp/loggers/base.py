"""The logger interface the trainer talks to, and rlexp's own metrics file."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
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
    concurrent: bool = False  # one of several runs this process logs at the same time (num_seeds > 1)


class Logger:
    """Receives scalar metrics and videos at a step (collected frames); a context manager that always finishes.

    Leaving the ``with`` block through an exception finishes the run with a non-zero exit code:
    128 + signal number for SIGTERM/SIGINT (``rlexp.signals``), else 1.
    """

    name = "logger"  # how messages name it

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_video(self, key: str, path: Path, step: int) -> None:
        """An MP4 file already in the run folder; loggers that hold media (W&B) take it in, the others skip it."""

    def finish(self, exit_code: int = 0) -> None:
        pass

    def abandon(self) -> None:
        """Release what is left after a failure of this logger (``Loggers`` dropped it); must not raise."""

    def __enter__(self) -> "Logger":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.finish(exit_code(exc))


class MetricsFile(Logger):
    """Appends one JSON object per log step to ``<run_dir>/metrics.jsonl``: ``{"frames": step, ...}``.

    ``continues_after``: first drop the lines after that step (a resumed run logs them again).
    """

    name = METRICS_FILE

    def __init__(self, run_dir: str | Path, continues_after: int | None = None):
        self.path = Path(run_dir) / METRICS_FILE
        if continues_after is not None and self.path.exists():
            lines = self.path.read_text(errors="replace").splitlines(keepends=True)
            rewrite_atomically(self.path, "".join(
                line for number, line in enumerate(lines, 1)
                if logged_up_to(self.path, number, line, continues_after, lambda line: json.loads(line)["frames"])))
        self._file = self.path.open("a")

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._file.write(json.dumps({"frames": step, **metrics}) + "\n")
        self._file.flush()

    def finish(self, exit_code: int = 0) -> None:
        self._file.close()


def logged_up_to(path: Path, number: int, line: str, step: int, read_step: Callable[[str], int]) -> bool:
    """True if line ``number`` of ``path`` is complete and logged at ``step`` or before. A damaged line (cut
    off, NUL bytes after a power loss) is dropped with a message naming the file and the line."""
    try:
        logged_at = read_step(line)
    except (ValueError, KeyError, TypeError, IndexError):
        print(f"rlexp: skipping damaged line {number} of {path}: {line.rstrip()[:60]!r}", file=sys.stderr)
        return False
    return line.endswith("\n") and logged_at <= step


def rewrite_atomically(path: Path, text: str) -> None:
    """Replace ``path``'s contents with ``text``; a kill midway leaves the old or the new file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Loggers(Logger):
    """Several loggers behind one. Logging never costs training: a logger that fails after it opened (W&B's
    service process killed, a full disk under its files) is dropped with one message naming it and the
    error, and the others go on, so ``metrics.jsonl`` still gets every step when W&B stops."""

    def __init__(self, *loggers: Logger):
        self.loggers = list(loggers)

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._each(lambda logger: logger.log(metrics, step), step)

    def log_video(self, key: str, path: Path, step: int) -> None:
        self._each(lambda logger: logger.log_video(key, path, step), step)

    def finish(self, exit_code: int = 0) -> None:
        self._each(lambda logger: logger.finish(exit_code), None)

    def _each(self, call: Callable[[Logger], None], step: int | None) -> None:
        for logger in list(self.loggers):
            try:
                call(logger)
            except Exception as err:  # noqa: BLE001  (whatever a logger raises, training goes on)
                self.loggers.remove(logger)
                logger.abandon()
                error = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                if step is None:
                    print(f"rlexp: {logger.name} could not finish ({error})", file=sys.stderr)
                else:
                    print(f"rlexp: {logger.name} stopped at step {step} ({error}); training goes on without it",
                          file=sys.stderr)
