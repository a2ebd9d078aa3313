"""SIGTERM and SIGINT during training: the W&B run is finished with its data and exit code 128 + signal.

Python's default SIGTERM would end the process at once, losing what W&B had not flushed (up to 15 s).
SIGINT takes the same path (checked in-process below; 130 instead of 143).
"""

import json
import signal
import subprocess
import sys
import threading

import pytest

from support import cli_env, read_wandb_run, wait_for
from rlexp.signals import Interrupted, interrupts_raise


def test_sigterm_finishes_the_wandb_run_with_its_data_and_a_non_zero_exit_code(run_dir, tmp_path):
    metrics = run_dir / "metrics.jsonl"
    with (tmp_path / "stderr.txt").open("w+") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "rlexp", f"hydra.run.dir={run_dir}", "collector.total_frames=10000000",
             "collector.frames_per_batch=1024", "env.num_envs=4", "eval.episodes=2"],
            env=cli_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 2)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=60) == 143
        finally:
            process.kill()
        stderr.seek(0)
        assert "rlexp: stopped by SIGTERM, exiting with code 143" in stderr.read()

    records = read_wandb_run(run_dir)
    wandb_frames = [r["history"]["item"]["frames"] for r in records if r["type"] == "history"]
    file_frames = [json.loads(line)["frames"] for line in metrics.read_text().splitlines()]
    # Every step W&B was handed is in the run; the signal may land between the file's and W&B's log call.
    assert len(wandb_frames) >= max(2, len(file_frames) - 1) and wandb_frames == file_frames[:len(wandb_frames)]
    assert [r["exit"]["exit_code"] for r in records if r["type"] == "exit"] == [143]


def test_first_signal_raises_interrupted_a_second_acts_as_before_and_the_default_returns():
    # SIGINT as in a terminal (a shell without job control starts background commands with it ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with interrupts_raise():
            with pytest.raises(Interrupted) as first:
                signal.raise_signal(signal.SIGINT)
            with pytest.raises(KeyboardInterrupt) as second:
                signal.raise_signal(signal.SIGINT)
        assert first.value.exit_code == 130 and not isinstance(second.value, Interrupted)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_handlers_installed_by_others_stay_and_other_threads_are_left_alone():
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        with interrupts_raise():
            signal.raise_signal(signal.SIGTERM)  # submitit's "bypass" handler works this way
        assert received == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, previous)

    errors = []

    def enter_in_thread():
        try:
            with interrupts_raise():
                pass
        except Exception as err:  # signal.signal raises ValueError outside the main thread
            errors.append(err)

    thread = threading.Thread(target=enter_in_thread)
    thread.start()
    thread.join()
    assert errors == []
