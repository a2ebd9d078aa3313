import csv
import json
import signal

import pytest

from rlexp.loggers import Logger, Loggers, MetricsFile, RunInfo
from rlexp.loggers.wandb_logger import resolve_mode
from rlexp.registry import ConfigError, loggers
from rlexp.signals import Interrupted


def run_info(tmp_path):
    return RunInfo(dir=tmp_path, config={"seed": 0}, id="abcd1234", name="seed=0", group="default")


def test_csv_logger_writes_json_lines_and_long_csv(tmp_path):
    with loggers.build({"name": "csv"}, run_info(tmp_path)) as logger:
        logger.log({"loss_objective": 0.5, "train/fps": 100.0}, step=64)
        logger.log({"eval/episode_return": 20.0}, step=128)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records == [{"frames": 64, "loss_objective": 0.5, "train/fps": 100.0},
                       {"frames": 128, "eval/episode_return": 20.0}]
    rows = list(csv.reader((tmp_path / "metrics.csv").open()))
    assert rows == [["frames", "metric", "value"], ["64", "loss_objective", "0.5"], ["64", "train/fps", "100.0"],
                    ["128", "eval/episode_return", "20.0"]]
    assert not (tmp_path / "wandb").exists()


def test_none_logger_writes_nothing(tmp_path):
    with loggers.build({"name": "none"}, run_info(tmp_path)) as logger:
        logger.log({"loss_objective": 0.5}, step=1)
    assert list(tmp_path.iterdir()) == []


def test_wandb_mode_offline_without_api_key_online_with_one(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_mode(None) == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode(None) == "online"
    assert resolve_mode("disabled") == "disabled"
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert resolve_mode(None) == "offline"
    with pytest.raises(ConfigError, match="logger.mode='ofline'; choose one of: online, offline, disabled"):
        resolve_mode("ofline")


def test_logger_finishes_with_the_exit_code_of_how_its_block_ended():
    codes = []

    class Recorder(Logger):
        def finish(self, exit_code: int = 0) -> None:
            codes.append(exit_code)

    with Recorder():
        pass
    for error in [RuntimeError("crash"), KeyboardInterrupt(), Interrupted(signal.SIGTERM)]:
        with pytest.raises(type(error)):
            with Recorder():
                raise error
    assert codes == [0, 1, 128 + signal.SIGINT, 128 + signal.SIGTERM]


def test_wandb_mode_names_where_a_bad_value_came_from_and_takes_wandbs_aliases(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    assert resolve_mode(None) == "offline"
    monkeypatch.setenv("WANDB_MODE", "run")
    assert resolve_mode(None) == "online"
    monkeypatch.setenv("WANDB_MODE", "ofline")
    with pytest.raises(ConfigError, match=r"^the environment variable WANDB_MODE='ofline'; choose one of: online, "
                                          r"offline, disabled \(or W&B's aliases dryrun = offline, run = online\)"):
        resolve_mode(None)


def test_a_logger_that_fails_is_dropped_with_one_message_and_the_others_go_on(tmp_path, capsys):
    class Broken(Logger):
        name = "W&B"

        def __init__(self):
            self.calls = 0

        def log(self, metrics, step):
            self.calls += 1
            if step >= 2:
                raise ConnectionResetError("[Errno 104] Connection reset by peer")

        def log_video(self, key, path, step):
            raise AssertionError("a dropped logger is not called again")

        def finish(self, exit_code=0):
            raise AssertionError("a dropped logger is not called again")

    broken, metrics = Broken(), MetricsFile(tmp_path)
    with Loggers(broken, metrics) as logger:
        for step in range(1, 5):
            logger.log({"x": float(step)}, step=step)
        logger.log_video("eval/video", tmp_path / "eval.mp4", step=4)
    assert broken.calls == 2
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["frames"] for line in lines] == [1, 2, 3, 4]
    assert capsys.readouterr().err == ("rlexp: W&B stopped at step 2 (ConnectionResetError: [Errno 104] Connection "
                                       "reset by peer); training goes on without it\n")


def test_a_logger_that_fails_on_an_evaluation_video_is_dropped_and_the_metrics_go_on(tmp_path, capsys):
    class NoVideos(Logger):
        name = "W&B"

        def log_video(self, key, path, step):
            raise OSError(f"cannot read {path}")

    with Loggers(NoVideos(), MetricsFile(tmp_path)) as logger:
        logger.log({"x": 1.0}, step=1)
        logger.log_video("eval/video", tmp_path / "eval.mp4", step=1)
        logger.log({"x": 2.0}, step=2)
    assert [json.loads(line)["x"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1.0, 2.0]
    assert capsys.readouterr().err == (f"rlexp: W&B stopped at step 1 (OSError: cannot read {tmp_path / 'eval.mp4'}); "
                                       "training goes on without it\n")
