"""``logger=csv``: the metrics file plus a long-format CSV, no W&B."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from rlexp.loggers.base import Logger


class CsvFile(Logger):
    """Writes ``<run_dir>/metrics.csv`` with one ``frames,metric,value`` row per scalar.

    Long format because metric sets differ between log steps (train vs eval);
    ``pandas.read_csv(...).pivot(index="frames", columns="metric", values="value")`` widens it.
    """

    def __init__(self, run_dir: str | Path):
        self._file = (Path(run_dir) / "metrics.csv").open("a", newline="")
        self._writer = csv.writer(self._file)
        if self._file.tell() == 0:
            self._writer.writerow(["frames", "metric", "value"])

    def log(self, metrics: Mapping[str, float], step: int) -> None:
        self._writer.writerows([step, key, value] for key, value in metrics.items())
        self._file.flush()

    def finish(self, exit_code: int = 0) -> None:
        self._file.close()
