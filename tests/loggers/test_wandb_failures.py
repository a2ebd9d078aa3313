"""W&B failing never costs training: its service process killed mid-run, or a server that does not answer."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from support import cli_env, wait_for

SMALL = ["collector.frames_per_batch=1024", "env.num_envs=4", "eval.episodes=2", "eval.interval=4096"]


def wandb_service(pid: int) -> int | None:
    """The ``wandb-core`` process among ``pid``'s children, if it has started."""
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        if "wandb-core" in Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace"):
            return int(child)
    return None


def test_training_goes_on_when_the_wandb_service_is_killed(run_dir, tmp_path):
    metrics = run_dir / "metrics.jsonl"
    frames = 16384
    with (tmp_path / "stderr.txt").open("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "rlexp", f"hydra.run.dir={run_dir}", f"collector.total_frames={frames}", *SMALL],
            env=cli_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 2)
            os.kill(wandb_service(process.pid), signal.SIGKILL)  # stands in for the OOM killer
            assert process.wait(timeout=300) == 0
        finally:
            process.kill()
        stderr.seek(0)
        output = stderr.read()
    logged = [json.loads(line)["frames"] for line in metrics.read_text().splitlines()]
    assert logged == list(range(1024, frames + 1, 1024))
    assert output.count("rlexp: W&B stopped at step") == 1, output
    assert "Traceback" not in output and (run_dir / "checkpoint.pt").exists()


def test_an_unanswering_wandb_server_leaves_the_run_offline_after_the_timeout(run_dir, tmp_path):
    with socket.socket() as server:  # accepts connections and never answers
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        env = cli_env(tmp_path) | {"WANDB_API_KEY": "a" * 40,
                                   "WANDB_BASE_URL": f"http://127.0.0.1:{server.getsockname()[1]}"}
        result = subprocess.run(
            [sys.executable, "-m", "rlexp", f"hydra.run.dir={run_dir}", "collector.total_frames=1024", *SMALL,
             "logger.init_timeout=3"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("rlexp: W&B")]
    assert line.startswith("rlexp: W&B could not start online within logger.init_timeout=3 s (")
    assert line.endswith(f"logging offline instead (upload later: wandb sync {run_dir}/wandb/offline-run-*)")
    assert len(list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))) == 1
    assert "Traceback" not in result.stderr


def test_wandb_mode_dryrun_is_offline(run_dir, tmp_path):
    result = subprocess.run([sys.executable, "-m", "rlexp", f"hydra.run.dir={run_dir}", "collector.total_frames=1024",
                             *SMALL], env=cli_env(tmp_path) | {"WANDB_MODE": "dryrun"}, cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert len(list(run_dir.glob("wandb/offline-run-*/run-*.wandb"))) == 1
