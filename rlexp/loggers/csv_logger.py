"""``logger=csv``: the metrics file plus a long-format CSV, no W&B."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from rlexp.loggers.base import Logger, logged_up_to, rewrite_atomically


class CsvFile(Logger):
    """Writes ``<run_dir>/metrics.csv`` with one ``frames,metric,value`` row per scalar.

    Long format because metric sets differ between log steps (train vs eval);
    ``pandas.read_csv(...).pivot(index="frames", columns="metric", values="value")`` widens it.
    ``continues_after``: first drop the rows after that step (a resumed run logs them again).
    """

    name = "metrics.csv"

    def __init__(self, run_dir: str | Path, continues_after: int | None = None):
        path = Path(run_dir) / "metrics.csv"
        if continues_after is not None and path.exists():
            lines = path.read_text(errors="replace").splitlines(keepends=True)  # empty: killed before the header
            rewrite_atomically(path, "".join(lines[:1]) + "".join(
                row for number, row in enumerate(lines[1:], 2)
                if logged_up_to(path, number, row, continues_after, lambda row: int(row.split(",", 1)[0]))))
        self._file = path.open("a", newline="")
        self._writer = csv.writer(self._file)
        if self._file.tell() == 0:
            self._writer.writerow(["frames", "metric", "value"])

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._writer.writerows([step, key, value] for key, value in metrics.items())
        self._file.flush()

    def finish(self, exit_code: int = 0) -> None:
        self._file.close()
