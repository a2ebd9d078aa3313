"""A W&B offline run's logged history, read with wandb's own reader (``wandb leet inspect --json``), no network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def read_wandb_history(path: Path) -> list[dict]:
    """The ``history`` items of the run file ``run-*.wandb``, in logging order.

    Raises ``subprocess.CalledProcessError`` (with wandb's stderr) if the reader fails.
    """
    result = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", str(path), "--json"],
                            capture_output=True, text=True, check=True)
    records = (json.loads(line) for line in result.stdout.splitlines() if line.strip())
    return [record["history"]["item"] for record in records if record.get("type") == "history"]
