"""A submitit job preempted mid-training is requeued, and its second attempt resumes from the job's newest
checkpoint in the same W&B run."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from support import cli_env, read_wandb_runs, require_plugin, wait_for

pytestmark = pytest.mark.e2e  # every test here runs python -m rlexp in a subprocess

FRAMES = list(range(1024, 8193, 1024))


def child_pids(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def test_requeued_submitit_job_continues_its_wandb_run(tmp_path):
    require_plugin("hydra_plugins.hydra_submitit_launcher")
    sweep_dir, metrics = tmp_path / "sweep", tmp_path / "sweep" / "0" / "metrics.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "rlexp", "-m", f"hydra.sweep.dir={sweep_dir}", "hydra/launcher=submitit_local",
         "seed=0", f"collector.total_frames={FRAMES[-1]}", "collector.frames_per_batch=1024", "env.num_envs=4",
         "eval.episodes=2", "checkpoint.interval=1024"],
        env=cli_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for((sweep_dir / "0" / "checkpoints" / "checkpoint_000000002048.pt").exists)
        # submitit_local names the job's folder after its controller process, whose child runs the job.
        (controller,) = [path for path in (sweep_dir / ".submitit").iterdir() if path.name.isdigit()]
        (job,) = child_pids(int(controller.name))
        os.kill(job, signal.SIGUSR2)  # submitit's preemption signal: it requeues the job and exits
        assert process.wait(timeout=120) == 0
    finally:
        process.kill()

    first, second = read_wandb_runs(sweep_dir / "0")
    (first_run,) = [r["run"] for r in first if r["type"] == "run"]
    (second_run,) = [r["run"] for r in second if r["type"] == "run"]
    assert first_run["run_id"] == second_run["run_id"]
    first_frames = [r["history"]["item"]["frames"] for r in first if r["type"] == "history"]
    assert 1 <= len(first_frames) < len(FRAMES) and first_frames == FRAMES[:len(first_frames)]
    assert [r["exit"]["exit_code"] for r in first if r["type"] == "exit"] == [1]
    second_frames = [r["history"]["item"]["frames"] for r in second if r["type"] == "history"]
    assert second_frames[0] >= 3072 and second_frames == FRAMES[FRAMES.index(second_frames[0]):]  # resumed
    assert [r["exit"]["exit_code"] for r in second if r["type"] == "exit"] == [0]
    assert [json.loads(line)["frames"] for line in metrics.read_text().splitlines()] == FRAMES
