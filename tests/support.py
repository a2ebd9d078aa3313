"""Test helpers: compose rlexp's Hydra config in-process, run the CLI, read W&B offline runs back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

import rlexp.__main__  # noqa: F401  (registers the config's rlexp_root resolver)

ROOT = Path(__file__).resolve().parent.parent


def compose_config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def run_cli(run_dir: Path, *overrides: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m rlexp`` in a subprocess with no W&B API key configured."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {"NETRC": str(run_dir.parent / "no-netrc"), "WANDB_SILENT": "true"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([sys.executable, "-m", "rlexp", f"hydra.run.dir={run_dir}", *overrides],
                          capture_output=True, text=True, env=env, timeout=600, cwd=run_dir.parent)


def read_wandb_run(run_dir: Path) -> list[dict]:
    """Records of the single offline W&B run under ``run_dir``, through wandb's own reader."""
    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    wandb_cli = Path(sys.executable).with_name("wandb")
    out = subprocess.run([str(wandb_cli), "leet", "inspect", str(path), "--json"], capture_output=True,
                         text=True, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
