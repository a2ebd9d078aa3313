"""Checkpoint files: written atomically, verified on load, the newest ``keep`` kept.

A kill mid-write never leaves a corrupt file under a checkpoint's name: each is written to a
temporary file in the same folder, fsynced, then renamed. A checkpoint is a ``torch.save`` zip
archive; loading checks the CRC-32 of every entry (``torch.load`` alone reads flipped bytes
silently) and rlexp's format marker, so a damaged or foreign file is refused with its reason.
"""

from __future__ import annotations

import fcntl
import io
import os
import random
import socket
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlexp.registry import ConfigError

FORMAT = "rlexp-checkpoint/1"
FINAL = "checkpoint.pt"
PERIODIC_DIR = "checkpoints"
LOCK = ".rlexp.lock"  # held (flock) by the live run of a folder
RUN_FILES = ("metrics.jsonl", "metrics.csv", FINAL, PERIODIC_DIR)  # what makes a folder a run's


class CheckpointError(ConfigError):
    """A checkpoint path that does not exist, is damaged, or is not an rlexp checkpoint."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, folder not writable); the message names file and cause."""


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``.

    The archive is built in memory and written with one plain ``write``: torch's zip writer reports a
    failed write (a full disk) as "unexpected pos", while ``write`` raises the OS's own error.
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state, "saved_at": time.time()}, buffer)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise CheckpointWriteError(err.errno, f"cannot write checkpoint {path}: {err.strerror or err}") from None
        raise
    return path


class PeriodicCheckpoints:
    """``checkpoints/checkpoint_<frames>.pt``, of which the newest ``keep`` of this run's own are kept.

    Rotation deletes only files of this run's timeline: those it wrote, and those at or before the frames
    it resumed from (``resumed_from``). A run resumed from an older checkpoint leaves the checkpoints of the
    timeline it branched from, beyond that point, where they are.
    """

    def __init__(self, run_dir: Path, keep: int, resumed_from: int | None = None):
        self.folder, self.keep = Path(run_dir) / PERIODIC_DIR, keep
        self.own = sorted(path for path in self.folder.glob("checkpoint_*.pt")
                          if resumed_from is not None and frames_of(path) <= resumed_from)

    def save(self, state: dict[str, Any], frames: int) -> Path:
        self.folder.mkdir(exist_ok=True)
        path = save_checkpoint(state, self.folder / f"checkpoint_{frames:012d}.pt")
        self.own = sorted({*self.own, path}, key=frames_of)
        for old in self.own[:-self.keep]:
            old.unlink(missing_ok=True)
        self.own = self.own[-self.keep:]
        return path


def frames_of(path: Path) -> int:
    """The frame count in a periodic checkpoint's name, ``checkpoint_<frames>.pt``."""
    return int(path.stem.split("_")[-1])


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """The contents of the rlexp checkpoint at ``path``, after checking every entry's checksum."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist; give a checkpoint file or a run folder holding one.")
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise CheckpointError(f"{path} is corrupt or not a checkpoint: it is not a complete torch archive ({err}).")
    if damaged is not None:
        raise CheckpointError(f"{path} is corrupt: the checksum of its entry {damaged!r} does not match.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001  (whatever the unpickler raises, the file is unusable)
        raise CheckpointError(f"{path} is corrupt: torch.load failed ({type(err).__name__}: {err}).") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not an rlexp checkpoint (no {FORMAT!r} marker).")
    return state


def run_folder(path: str | Path) -> Path:
    """The run folder a checkpoint belongs to (``<run>/checkpoint.pt``, ``<run>/checkpoints/*.pt``), or ``path``."""
    path = Path(path)
    if path.is_dir():
        return path
    return path.parent.parent if path.parent.name == PERIODIC_DIR else path.parent


def latest_resumable(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The checkpoint to resume from: ``path`` if it is a file, else the run folder's newest intact one.

    Newest means most recently written, not most frames: a run resumed from an older checkpoint and
    stopped again is a newer timeline than the longer one it branched from, and resuming the folder
    continues it. Damaged files are skipped with a warning naming them, so a kill that left the newest
    unreadable falls back to the one before.
    """
    path = Path(path)
    if not path.is_dir():
        state = load_checkpoint(path)
        if not state.get("resumable", True):
            raise CheckpointError(f"{path} holds the last finite parameters of a run stopped by a non-finite loss, "
                                  f"not a resumable state; resume from a file in {run_folder(path) / PERIODIC_DIR}.")
        return path, state
    candidates = [path / FINAL, *sorted((path / PERIODIC_DIR).glob("checkpoint_*.pt"))]
    found: list[tuple[int, Path, dict[str, Any]]] = []
    for candidate in filter(Path.is_file, candidates):
        try:
            state = load_checkpoint(candidate)
        except CheckpointError as err:
            print(f"rlexp: skipping {err}", file=sys.stderr)
            continue
        if state.get("resumable", True):  # checkpoints written before saved_at existed: the file's time
            found.append(((state.get("saved_at", candidate.stat().st_mtime), state["frames"]), candidate, state))
    if not found:
        raise CheckpointError(f"{path} holds no intact rlexp checkpoint ({FINAL} or {PERIODIC_DIR}/checkpoint_*.pt).")
    _, newest, state = max(found, key=lambda item: item[0])
    return newest, state


@contextmanager
def held_run_folder(run_dir: Path, continuing: bool) -> Iterator[None]:
    """Hold ``run_dir`` for this run: a lock that a second live run is refused by, and, unless this run
    continues the folder's own run (``resume=``, a requeued job), a refusal of a folder that already holds
    another run's metrics or checkpoints, whose files would be interleaved, rotated away or resumed."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = (run_dir / LOCK).open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise ConfigError(f"{run_dir} is in use by a live run ({holder}); start this run in another folder "
                          "(hydra.run.dir=...).") from None
    try:
        found = [name for name in RUN_FILES if (run_dir / name).exists()]
        if found and not continuing:
            raise ConfigError(f"{run_dir} already holds another run ({', '.join(found)}); continue that run with "
                              f"resume={run_dir}, or start this one in another folder (hydra.run.dir=...).")
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        lock.flush()
        yield
    finally:
        lock.close()


def rng_states() -> dict[str, Any]:
    """Python, numpy and torch global RNG states."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
