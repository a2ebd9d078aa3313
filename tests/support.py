"""Test helpers: run the CLI, read W&B offline runs back, require Hydra plugins; ``compose_config`` and ``ROOT``
come from rlexp.config."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rlexp.config import ROOT, compose_config  # noqa: F401  (the tests compose through support)

LAUNCHERS = {  # Hydra launchers the sweep tests run under: name: (launcher overrides, plugin module)
    "basic": ([], None),
    "joblib": (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "hydra_plugins.hydra_joblib_launcher"),
    "submitit_local": (["hydra/launcher=submitit_local"], "hydra_plugins.hydra_submitit_launcher"),
}


def cli_env(folder: Path, pythonpath: Path | None = None) -> dict[str, str]:
    """This process's environment minus any W&B API key or settings, so runs are offline; ``rlexp`` is
    imported from this checkout (not from wherever the virtualenv installed it), plus ``pythonpath``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env |= {"NETRC": str(folder / "no-netrc"), "WANDB_SILENT": "true"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *([str(pythonpath)] if pythonpath is not None else [])])
    return env


def run_cli(run_dir: Path, *overrides: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m rlexp`` in a subprocess with no W&B API key configured."""
    return subprocess.run([sys.executable, "-m", "rlexp", f"hydra.run.dir={run_dir}", *overrides],
                          capture_output=True, text=True, env=cli_env(run_dir.parent, pythonpath), timeout=600,
                          cwd=run_dir.parent)


def resume_cli(target: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``python -m rlexp resume=<target>`` in a subprocess (Hydra's run folder is the resumed run's)."""
    return subprocess.run([sys.executable, "-m", "rlexp", f"resume={target}", *overrides], capture_output=True,
                          text=True, env=cli_env(target.parent), timeout=600, cwd=target.parent)


def kill_when(checkpoint: Path, run_dir: Path, *overrides: str) -> None:
    """Start ``python -m rlexp`` into ``run_dir`` and SIGKILL it as soon as ``checkpoint`` exists (no final checkpoint
    may be written by then: the run must still be training)."""
    process = subprocess.Popen([sys.executable, "-m", "rlexp", f"hydra.run.dir={run_dir}", *overrides],
                               env=cli_env(run_dir.parent), cwd=run_dir.parent, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_for(checkpoint.exists)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    finally:
        process.kill()
    assert not (run_dir / "checkpoint.pt").exists(), "the run ended before it was killed"


def run_multirun(sweep_dir: Path, *overrides: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m rlexp -m`` into ``sweep_dir`` (job folders 0, 1, ...) with no W&B API key configured."""
    return subprocess.run([sys.executable, "-m", "rlexp", "-m", f"hydra.sweep.dir={sweep_dir}", *overrides],
                          capture_output=True, text=True, env=cli_env(sweep_dir.parent, pythonpath), timeout=600,
                          cwd=sweep_dir.parent)


def require_plugin(module: str) -> None:
    """Skip the test when the Hydra plugin ``module`` is not installed, and fail it in CI (``CI=true``), which
    installs the sweep extra: there a missing plugin is a broken install, not an optional feature."""
    try:
        importlib.import_module(module)
    except ImportError as err:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and the Hydra plugin {module} is missing (install the sweep extra): {err}")
        pytest.skip(f"the Hydra plugin {module} is not installed (the sweep extra)")


def read_wandb_runs(run_dir: Path) -> list[list[dict]]:
    """Records of each offline W&B run under ``run_dir`` (oldest first), through wandb's own reader."""
    wandb_cli = Path(sys.executable).with_name("wandb")
    runs = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        out = subprocess.run([str(wandb_cli), "leet", "inspect", str(path), "--json"], capture_output=True,
                             text=True, check=True)
        runs.append([json.loads(line) for line in out.stdout.splitlines() if line.strip()])
    return runs


def read_wandb_run(run_dir: Path) -> list[dict]:
    """Records of the single offline W&B run under ``run_dir``."""
    (records,) = read_wandb_runs(run_dir)
    return records


def wait_for(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    """Poll ``condition`` every 50 ms until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {condition}"
        time.sleep(0.05)
