"""Checkpoint files: written atomically, verified on load, the newest ``keep`` kept.

A kill mid-write never leaves a corrupt file under a checkpoint's name: each is written to a
temporary file in the same folder, fsynced, then renamed. A checkpoint is a ``torch.save`` zip
archive; loading checks the CRC-32 of every entry (``torch.load`` alone reads flipped bytes
silently) and rlexp's format marker, so a damaged or foreign file is refused with its reason.
"""

from __future__ import annotations

import io
import os
import random
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rlexp.registry import ConfigError

FORMAT = "rlexp-checkpoint/1"
FINAL = "checkpoint.pt"
PERIODIC_DIR = "checkpoints"


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
    torch.save({"format": FORMAT, **state}, buffer)
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


def save_periodic(state: dict[str, Any], run_dir: Path, frames: int, keep: int) -> Path:
    """Write ``checkpoints/checkpoint_<frames>.pt`` and delete all but the newest ``keep`` of them."""
    folder = Path(run_dir) / PERIODIC_DIR
    folder.mkdir(exist_ok=True)
    path = save_checkpoint(state, folder / f"checkpoint_{frames:012d}.pt")
    for old in sorted(folder.glob("checkpoint_*.pt"))[:-keep]:
        old.unlink()
    return path


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

    Damaged files in the folder are skipped with a warning naming them, so a kill that left the
    newest unreadable falls back to the one before.
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
        if state.get("resumable", True):
            found.append((state["frames"], candidate, state))
    if not found:
        raise CheckpointError(f"{path} holds no intact rlexp checkpoint ({FINAL} or {PERIODIC_DIR}/checkpoint_*.pt).")
    _, newest, state = max(found, key=lambda item: item[0])
    return newest, state


def rng_states() -> dict[str, Any]:
    """Python, numpy and torch global RNG states."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
