"""A run folder belongs to one run: a lock, a refusal of another run's folder, rotation of the run's own
checkpoints only, resume of the latest timeline, and damaged metrics lines skipped on resume."""

import json
import signal

import pytest

from support import compose_config, run_cli
from rlexp.checkpoint import PeriodicCheckpoints, held_run_folder, latest_resumable
from rlexp.loggers import CsvFile, Logger, MetricsFile
from rlexp.registry import ConfigError
from rlexp.signals import Interrupted, StopRequest
from rlexp.trainer import train

ARGS = ["logger=none", "seed=3", "collector.frames_per_batch=1024", "env.num_envs=8", "eval.interval=100000",
        "eval.episodes=2", "checkpoint.interval=2048", "checkpoint.keep=3"]


def test_a_live_run_holds_its_folder_and_a_new_run_refuses_another_runs_files(tmp_path):
    with held_run_folder(tmp_path, continuing=False):
        with pytest.raises(ConfigError, match=f"{tmp_path} is in use by a live run \\(pid \\d+ on .+\\); start"):
            with held_run_folder(tmp_path, continuing=True):
                pass
    with held_run_folder(tmp_path, continuing=False):  # released at the end of the block
        (tmp_path / "metrics.jsonl").write_text("")
    with pytest.raises(ConfigError, match=f"{tmp_path} already holds another run \\(metrics.jsonl\\); continue that "
                                          f"run with resume={tmp_path}, or start this one in another folder"):
        with held_run_folder(tmp_path, continuing=False):
            pass
    with held_run_folder(tmp_path, continuing=True):
        pass


def test_a_second_run_in_a_fixed_run_dir_is_refused_in_one_line(run_dir):
    small = ["logger=csv", "collector.total_frames=1024", "collector.frames_per_batch=1024", "env.num_envs=4",
             "eval.episodes=2"]
    assert run_cli(run_dir, *small).returncode == 0
    before = (run_dir / "metrics.jsonl").read_text()
    result = run_cli(run_dir, *small, "seed=1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"already holds another run (metrics.jsonl, metrics.csv, checkpoint.pt)" in result.stderr
    assert (run_dir / "metrics.jsonl").read_text() == before


def test_rotation_deletes_only_this_runs_checkpoints(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for frames in (2048, 4096, 6144, 8192):  # an earlier timeline's checkpoints
        (folder / f"checkpoint_{frames:012d}.pt").write_text("earlier")
    periodic = PeriodicCheckpoints(tmp_path, keep=2, resumed_from=4096)  # resumed from 4096: 2048, 4096 are its past
    for frames in (5120, 6144, 7168):
        periodic.save({"frames": frames}, frames)
    assert sorted(path.name for path in folder.iterdir()) == [
        "checkpoint_000000006144.pt", "checkpoint_000000007168.pt", "checkpoint_000000008192.pt"]
    assert (folder / "checkpoint_000000008192.pt").read_text() == "earlier"


def test_resuming_a_folder_continues_its_latest_timeline(tmp_path):
    train(compose_config(*ARGS, "collector.total_frames=8192"), tmp_path, make_logger=Logger)
    _, branch_point = latest_resumable(tmp_path / "checkpoints" / "checkpoint_000000004096.pt")
    stop = StopRequest()
    stop.signum = signal.SIGTERM  # the extension is interrupted after its first iteration
    with pytest.raises(Interrupted):
        train(compose_config(*ARGS, "collector.total_frames=16384"), tmp_path, make_logger=Logger,
              resume=branch_point, stop=stop)
    path, state = latest_resumable(tmp_path)
    assert path.name == "checkpoint_000000005120.pt" and state["config"]["collector"]["total_frames"] == 16384
    assert latest_resumable(tmp_path / "checkpoint.pt")[1]["frames"] == 8192  # the older timeline is left as it was
    assert (tmp_path / "checkpoints" / "checkpoint_000000008192.pt").exists()


def test_damaged_metrics_lines_are_skipped_on_resume_naming_file_and_line(tmp_path, capsys):
    lines = [json.dumps({"frames": 1024, "x": 1.0}), "\0" * 40, json.dumps({"frames": 2048, "x": 2.0}),
             json.dumps({"frames": 3072, "x": 3.0})]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "metrics.csv").write_text("")  # killed before its header
    with MetricsFile(tmp_path, continues_after=2048), CsvFile(tmp_path, continues_after=2048) as csv_file:
        csv_file.log({"x": 3.0}, step=3072)
    assert capsys.readouterr().err == f"rlexp: skipping damaged line 2 of {tmp_path / 'metrics.jsonl'}: {lines[1]!r}\n"
    assert (tmp_path / "metrics.jsonl").read_text() == f"{lines[0]}\n{lines[2]}\n"
    assert (tmp_path / "metrics.csv").read_text() == "frames,metric,value\n3072,x,3.0\n"
