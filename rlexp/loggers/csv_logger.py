"""``logger=csv``: the metrics file plus a long-format CSV, no W&B."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from rlexp.loggers.base import Logger, rewrite_atomically


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
            header, *rows = path.read_text().splitlines(keepends=True)
            rewrite_atomically(path, header + "".join(
                row for row in rows if row.endswith("\n") and int(row.split(",", 1)[0]) <= continues_after))
        self._file = path.open("a", newline="")
        self._writer = csv.writer(self._file)
        if self._file.tell() == 0:
            self._writer.writerow(["frames", "metric", "value"])

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._writer.writerows([step, key, value] for key, value in metrics.items())
        self._file.flush()

    def finish(self, exit_code: int = 0) -> None:
        self._file.close()
