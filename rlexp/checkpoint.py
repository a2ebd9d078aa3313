"""Checkpoint files: written atomically, the newest ``keep`` kept, everything needed to evaluate inside.

A kill mid-write never leaves a corrupt file under a checkpoint's name: each is written to a
temporary file in the same folder, fsynced, then renamed.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_periodic(state: dict[str, Any], run_dir: Path, frames: int, keep: int) -> Path:
    """Write ``checkpoints/checkpoint_<frames>.pt`` and delete all but the newest ``keep`` of them."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    folder.mkdir(exist_ok=True)
    path = save_checkpoint(state, folder / f"checkpoint_{frames:012d}.pt")
    for old in sorted(folder.glob("checkpoint_*.pt"))[:-keep]:
        old.unlink()
    return path


def rng_states() -> dict[str, Any]:
    """Python, numpy and torch global RNG states."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
