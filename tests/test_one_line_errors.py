"""Errors from outside the config get one line instead of a traceback, and a genuine bug keeps its traceback."""

import errno
import os
import subprocess
import sys

import pytest
import torch

from support import ROOT, run_cli
from rlexp.__main__ import reported
from rlexp.checkpoint import CheckpointWriteError, save_checkpoint


def test_a_bug_in_a_users_builder_keeps_its_traceback_and_is_no_configuration_error(run_dir):
    result = run_cli(run_dir, "logger=none", "imports=[user_loss]", "loss.name=clip_ppo_with_a_bug",
                     pythonpath=ROOT / "tests")
    assert result.returncode == 1
    assert "Traceback" in result.stderr and "in clip_ppo_with_a_bug" in result.stderr
    assert "TypeError: unsupported operand type(s) for *: 'NoneType' and 'float'" in result.stderr
    assert "configuration error" not in result.stderr


def test_rlexp_evaluate_refuses_a_bad_number_in_one_line(tmp_path):
    for argument, message in [("episodes=abc", "episodes='abc' must be an integer >= 1"),
                              ("episodes=0", "episodes='0' must be an integer >= 1"),
                              ("seed=-1", "seed='-1' must be an integer >= 0")]:
        result = subprocess.run([sys.executable, "-m", "rlexp.evaluate", str(tmp_path), argument],
                                capture_output=True, text=True, cwd=ROOT)
        assert result.returncode == 2 and result.stderr == f"rlexp.evaluate: {message}\n", result.stderr


def test_a_full_disk_during_a_checkpoint_write_is_named_and_leaves_no_file(tmp_path, monkeypatch):
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, fd, mode):
            self.file = real_fdopen(fd, mode)

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

    monkeypatch.setattr(os, "fdopen", FullDisk)
    with pytest.raises(CheckpointWriteError) as err:
        save_checkpoint({"weights": torch.zeros(3)}, tmp_path / "checkpoint.pt")
    assert list(tmp_path.iterdir()) == []  # neither the checkpoint nor its temporary file
    code, message = reported(err.value)
    assert code == 1
    assert message.startswith(f"cannot write checkpoint {tmp_path / 'checkpoint.pt'}: No space left on device")


def test_an_output_folder_that_cannot_be_written_is_named_in_one_line(tmp_path):
    (tmp_path / "a_file").write_text("")
    blocked = [(tmp_path / "a_file" / "run", "Not a directory")]
    if os.geteuid() != 0:  # root writes into read-only folders
        (tmp_path / "read_only").mkdir(mode=0o555)
        blocked.append((tmp_path / "read_only" / "run", "Permission denied"))
    for folder, reason in blocked:
        for mode, key in [([], "hydra.run.dir"), (["-m", "seed=0,1"], "hydra.sweep.dir")]:
            result = subprocess.run([sys.executable, "-m", "rlexp", *mode, f"{key}={folder}", "logger=none"],
                                    capture_output=True, text=True, cwd=ROOT)
            assert result.returncode == 1
            assert result.stderr == (f"rlexp: cannot write to the output folder {folder} ({reason}); choose another "
                                     f"with {key}=<folder>\n")
