"""Find rlexp runs under folders, load their evaluation histories and name their configurations.

A run's configuration is its Hydra overrides minus the seed and the overrides that do not change
training; runs with the same configuration are the seeds of one row of the comparison.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from rlexp.loggers.base import METRICS_FILE

EVAL_RETURN = "eval/episode_return"
SECONDS = "train/seconds"
WANDB_RUN_FILES = "wandb/offline-run-*/run-*.wandb"
# Top-level names whose overrides do not make another configuration: the seed, Hydra's own settings
# (launcher, job, sweep dirs) and the logger (where metrics go, not what is trained).
NOISE = frozenset({"seed", "hydra", "logger"})


@dataclass(frozen=True)
class Run:
    """One training job: configuration identity, seed, evaluation history and training totals."""

    dir: Path
    config: tuple[str, ...]
    seed: int | None
    eval_frames: np.ndarray
    eval_seconds: np.ndarray  # cumulative training wall seconds (evaluation excluded), as train/seconds
    eval_returns: np.ndarray
    frames: int  # at the last log step
    seconds: float


class SkipRun(Exception):
    """A run folder that cannot be compared; the message says why."""


def load_runs(folders: Iterable[str | Path]) -> tuple[list[Run], list[tuple[Path, str]]]:
    """Every comparable run under ``folders`` (sweep order), and the skipped run folders with the reason."""
    runs, skipped = [], []
    for run_dir in find_run_dirs(folders):
        try:
            runs.append(load_run(run_dir))
        except SkipRun as err:
            skipped.append((run_dir, str(err)))
    return runs, skipped


def find_run_dirs(folders: Iterable[str | Path]) -> list[Path]:
    """Folders holding ``metrics.jsonl`` or a W&B offline run, in natural order (job 2 before job 10)."""
    dirs: set[Path] = set()
    for folder in map(Path, folders):
        dirs.update(path.parent.resolve() for path in folder.rglob(METRICS_FILE))
        dirs.update(path.parents[2].resolve() for path in folder.rglob(WANDB_RUN_FILES))
    return sorted(dirs, key=lambda path: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))])


def load_run(run_dir: Path) -> Run:
    """The run in ``run_dir``; its last attempt only if a restarted job appended to the metrics file."""
    config = OmegaConf.load(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else OmegaConf.create()
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = list(OmegaConf.load(overrides_file)) if overrides_file.exists() else []
    rows = last_attempt(read_rows(run_dir))
    evals = [row for row in rows if EVAL_RETURN in row]
    if not evals:
        raise SkipRun("no evaluation logged")
    expected = expected_frames(config)
    if expected is not None and rows[-1]["frames"] < expected:
        raise SkipRun(f"stopped at {rows[-1]['frames']} of {expected} frames")
    return Run(
        dir=run_dir,
        config=config_key(overrides, config.get("experiment") or run_dir.name),
        seed=config.get("seed"),
        eval_frames=np.array([row["frames"] for row in evals], dtype=float),
        eval_seconds=np.array([row.get(SECONDS, np.nan) for row in evals], dtype=float),
        eval_returns=np.array([row[EVAL_RETURN] for row in evals], dtype=float),
        frames=int(rows[-1]["frames"]),
        seconds=float(rows[-1].get(SECONDS, np.nan)),
    )


def read_rows(run_dir: Path) -> list[dict]:
    """The logged rows: ``metrics.jsonl``, else the newest W&B offline run in the folder."""
    path = run_dir / METRICS_FILE
    if not path.exists():
        wandb_file = sorted(run_dir.glob(WANDB_RUN_FILES))[-1]
        try:
            return read_wandb_history(wandb_file)
        except subprocess.CalledProcessError as err:
            raise SkipRun(f"wandb leet inspect {wandb_file} failed: {err.stderr.strip()}") from None
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(lines, 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if number == len(lines):  # a job killed while writing leaves a partial last line
                break
            raise SkipRun(f"{path}:{number} is not JSON") from None
    return rows


def last_attempt(rows: list[dict]) -> list[dict]:
    """The rows after the last time ``frames`` went back: a job restarted from scratch appends to the file."""
    start = 0
    for index in range(1, len(rows)):
        if rows[index]["frames"] <= rows[index - 1]["frames"]:
            start = index
    return rows[start:]


def expected_frames(config: DictConfig) -> int | None:
    """Frames a finished run reaches (whole batches of ``collector.total_frames``); None if not configured."""
    collector = config.get("collector") or {}
    total, batch = collector.get("total_frames"), collector.get("frames_per_batch")
    if isinstance(total, int) and isinstance(batch, int) and batch > 0:
        return total // batch * batch
    return None


def read_wandb_history(path: Path) -> list[dict]:
    """The ``history`` items of the W&B offline run file ``run-*.wandb``, in logging order, read with wandb's
    own reader (``wandb leet inspect --json``), no network.

    Raises ``subprocess.CalledProcessError`` (with wandb's stderr) if the reader fails.
    """
    result = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", str(path), "--json"],
                            capture_output=True, text=True, check=True)
    records = (json.loads(line) for line in result.stdout.splitlines() if line.strip())
    return [record["history"]["item"] for record in records if record.get("type") == "history"]


def override_group(override: str) -> str:
    """The top-level name an override sets: ``+loss.clip_epsilon=0.1`` -> ``loss``, ``hydra/launcher=x`` -> ``hydra``."""
    name = override.split("=", 1)[0].lstrip("+~")
    return re.split(r"[./]", name, maxsplit=1)[0]


def config_key(overrides: Iterable[str], experiment: str) -> tuple[str, ...]:
    """The sorted overrides minus noise; ``(experiment,)`` for a run without any."""
    kept = tuple(sorted(o for o in overrides if override_group(o) not in NOISE))
    return kept or (str(experiment),)


def config_labels(keys: Sequence[tuple[str, ...]]) -> tuple[list[str], tuple[str, ...]]:
    """Short labels (each key minus the overrides all keys share) and the shared overrides.

    Nothing is dropped when that would leave a key with an empty label.
    """
    common = set.intersection(*(set(key) for key in keys)) if len(keys) > 1 else set()
    if any(not set(key) - common for key in keys):
        common = set()
    labels = [",".join(o for o in key if o not in common) for key in keys]
    return labels, tuple(sorted(common))
