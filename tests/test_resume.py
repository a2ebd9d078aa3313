"""Exact resume: a run killed with SIGKILL after a checkpoint and resumed ends bit-identical to one never
stopped; damaged checkpoints are refused and the previous one is used."""

import json
import random

import pytest
import torch

from support import compose_config, kill_when, read_wandb_runs, resume_cli, run_cli
from rlexp.checkpoint import CheckpointError, latest_resumable, load_checkpoint
from rlexp.loggers import Logger
from rlexp.trainer import train

ARGS = ["seed=3", "collector.total_frames=8192", "collector.frames_per_batch=1024", "env.num_envs=8",
        "eval.interval=2048", "eval.episodes=2", "checkpoint.interval=4096"]
TIMING = {"train/fps", "train/seconds", "_runtime", "_timestamp"}


def without_timing(rows: list[dict]) -> list[dict]:
    return [{key: value for key, value in row.items() if key not in TIMING and not key.startswith("train/time_")}
            for row in rows]


def metrics(run_dir) -> list[dict]:
    return without_timing([json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()])


def wandb_history(records: list[dict]) -> list[dict]:
    return without_timing([record["history"]["item"] for record in records if record["type"] == "history"])


@pytest.mark.e2e
def test_sigkill_right_after_a_checkpoint_then_resume_is_bit_identical(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_cli(whole, *ARGS).returncode == 0

    kill_when(killed / "checkpoints" / "checkpoint_000000004096.pt", killed, *ARGS)
    result = resume_cli(killed)
    assert result.returncode == 0, result.stderr
    assert "resuming" in result.stderr and "checkpoint_000000004096.pt at 4,096 frames" in result.stderr

    expected, resumed = (torch.load(folder / "checkpoint.pt", weights_only=False) for folder in (whole, killed))
    assert expected["loss"].keys() == resumed["loss"].keys()
    for key, value in expected["loss"].items():
        assert torch.equal(resumed["loss"][key], value), key
    for a, b in zip(expected["optimizer"]["state"].values(), resumed["optimizer"]["state"].values()):
        assert all(torch.equal(a[key], b[key]) for key in a)
    assert metrics(killed) == metrics(whole) and len(metrics(whole)) == 8

    (reference,) = read_wandb_runs(whole)
    before, after = read_wandb_runs(killed)
    assert len({r["run"]["run_id"] for r in before + after if r["type"] == "run"}) == 1
    assert any(r["run"].get("resume") for r in after if r["type"] == "run")
    # what the killed run's W&B file holds (up to its last flush) is a prefix; the resumed run logs the rest
    assert wandb_history(before) == wandb_history(reference)[:len(wandb_history(before))]
    assert wandb_history(after) == wandb_history(reference)[4:]


@pytest.fixture(scope="module")
def periodic_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("periodic")
    train(compose_config("logger=none", *ARGS, "checkpoint.interval=2048", "checkpoint.keep=3"), folder,
          make_logger=Logger)
    return folder


def test_truncated_or_flipped_newest_checkpoint_is_refused_and_the_previous_used(periodic_run, tmp_path, capsys):
    final = load_checkpoint(periodic_run / "checkpoint.pt")
    folder = tmp_path / "run"
    (folder / "checkpoints").mkdir(parents=True)
    for path in (periodic_run / "checkpoints").iterdir():
        (folder / "checkpoints" / path.name).write_bytes(path.read_bytes())
    newest = folder / "checkpoints" / "checkpoint_000000008192.pt"
    data = newest.read_bytes()

    rng = random.Random(0)
    for offset in [0, 1, 100, len(data) - 1, *rng.sample(range(len(data)), 8)]:
        newest.write_bytes(data[:offset])
        with pytest.raises(CheckpointError, match="is corrupt"):
            load_checkpoint(newest)
        path, state = latest_resumable(folder)
        assert path.name == "checkpoint_000000006144.pt" and state["frames"] == 6144
        assert f"skipping {newest} is corrupt" in capsys.readouterr().err

    # A flipped bit fails an entry's CRC-32, or lies in zip metadata that does not change what loads.
    intact, refused = load_checkpoint(periodic_run / "checkpoints" / newest.name), 0
    for position in rng.sample(range(len(data)), 40):
        flipped = bytearray(data)
        flipped[position] ^= 1 << rng.randrange(8)
        newest.write_bytes(bytes(flipped))
        try:
            loaded = load_checkpoint(newest)
        except CheckpointError:
            refused += 1
            continue
        assert all(torch.equal(loaded["loss"][key], value) for key, value in intact["loss"].items())
        assert loaded["collector"]["env"]["vector_env"] == intact["collector"]["env"]["vector_env"]
        root = intact["collector"]["root"]
        assert root.keys() == loaded["collector"]["root"].keys()
        assert all(torch.equal(loaded["collector"]["root"][key], value) for key, value in root.items())
    assert refused >= 30

    # the previous checkpoint resumes to the same end as the run that was never interrupted
    train(compose_config("logger=none", *ARGS), folder, make_logger=Logger, resume=state)
    resumed = load_checkpoint(folder / "checkpoint.pt")
    assert all(torch.equal(resumed["loss"][key], value) for key, value in final["loss"].items())


def test_foreign_files_and_non_resumable_checkpoints_are_refused(tmp_path):
    torch.save({"actor": {}}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="is a torch file but not an rlexp checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="holds no intact rlexp checkpoint"):
        latest_resumable(tmp_path)


@pytest.mark.e2e
def test_resume_accepts_a_longer_budget_and_refuses_other_overrides(periodic_run, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "checkpoint.pt").write_bytes((periodic_run / "checkpoint.pt").read_bytes())
    result = resume_cli(folder, "optim.lr=0.1", "loss=grpo")
    assert result.returncode == 2 and "optim.lr=0.1, loss=grpo would change it" in result.stderr
    result = resume_cli(folder, "collector.total_frames=10240", "device=cpu")
    assert result.returncode == 0, result.stderr
    assert load_checkpoint(folder / "checkpoint.pt")["frames"] == 10240
