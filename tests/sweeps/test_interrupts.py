"""SIGTERM and SIGINT during training: the iteration finishes, a checkpoint is written, the W&B run is
finished with its data and exit code 128 + signal, and ``resume=`` continues from that checkpoint.

Python's default SIGTERM would end the process at once, losing what W&B had not flushed (up to 15 s).
SIGINT takes the same path (checked in-process below; 130 instead of 143).
"""

import json
import re
import signal
import subprocess
import sys
import threading

import pytest
import torch

from support import cli_env, read_wandb_runs, resume_cli, wait_for
from rlexp.signals import Interrupted, stop_on_signals

SMALL = ["collector.frames_per_batch=1024", "env.num_envs=4", "eval.episodes=2"]


@pytest.mark.e2e
def test_sigterm_checkpoints_the_finished_iteration_and_resume_continues_the_run(run_dir, tmp_path):
    metrics = run_dir / "metrics.jsonl"
    with (tmp_path / "stderr.txt").open("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "rlexp", f"hydra.run.dir={run_dir}", "collector.total_frames=10000000", *SMALL],
            env=cli_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 2)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 143
        finally:
            process.kill()
        stderr.seek(0)
        message = re.search(r"rlexp: stopped by SIGTERM at ([\d,]+) frames; checkpoint (\S+), exiting with code 143",
                            stderr.read())
    assert message, "no stop message"
    frames = int(message[1].replace(",", ""))
    file_frames = [json.loads(line)["frames"] for line in metrics.read_text().splitlines()]
    assert file_frames[-1] == frames and torch.load(message[2], weights_only=False)["frames"] == frames
    (records,) = read_wandb_runs(run_dir)
    assert [r["history"]["item"]["frames"] for r in records if r["type"] == "history"] == file_frames
    assert [r["exit"]["exit_code"] for r in records if r["type"] == "exit"] == [143]

    result = resume_cli(run_dir, f"collector.total_frames={frames + 2048}")
    assert result.returncode == 0, result.stderr
    file_frames += [frames + 1024, frames + 2048]
    assert [json.loads(line)["frames"] for line in metrics.read_text().splitlines()] == file_frames
    first, second = read_wandb_runs(run_dir)
    assert [r["run"]["run_id"] for r in first + second if r["type"] == "run"] == [records[1]["run"]["run_id"]] * 2
    assert [r["history"]["item"]["frames"] for r in second if r["type"] == "history"] == file_frames[-2:]
    assert [r["exit"]["exit_code"] for r in second if r["type"] == "exit"] == [0]


def test_first_signal_requests_a_stop_a_second_raises_and_the_default_returns():
    # SIGINT as in a terminal (a shell without job control starts background commands with it ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with stop_on_signals() as stop:
            assert not stop
            signal.raise_signal(signal.SIGINT)
            assert stop and stop.signum == signal.SIGINT
            with pytest.raises(Interrupted) as second:
                signal.raise_signal(signal.SIGINT)
        assert second.value.exit_code == 130
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_handlers_installed_by_others_stay_and_other_threads_are_left_alone():
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with stop_on_signals() as stop:
            signal.raise_signal(signal.SIGTERM)  # submitit's "bypass" handler works this way
        assert received == [signal.SIGTERM] and not stop
    finally:
        signal.signal(signal.SIGTERM, previous)

    errors = []

    def enter_in_thread():
        try:
            with stop_on_signals():
                pass
        except Exception as err:  # signal.signal raises ValueError outside the main thread
            errors.append(err)

    thread = threading.Thread(target=enter_in_thread)
    thread.start()
    thread.join()
    assert errors == []
