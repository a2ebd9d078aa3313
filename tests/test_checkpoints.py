"""Periodic checkpoints, the non-finite-loss stop, and evaluating a checkpoint without its config."""

import subprocess
import sys

import pytest
import torch

from support import compose_config
from rlexp.checkpoint import latest_resumable
from rlexp.evaluate import evaluate_checkpoint
from rlexp.loggers import Logger
from rlexp.objectives import ClipPPOLoss
from rlexp.registry import ConfigError, losses
from rlexp.trainer import NonFiniteLoss, train

SMALL = ["logger=none", "collector.total_frames=8192", "collector.frames_per_batch=1024", "env.num_envs=8",
         "eval.interval=100000", "eval.episodes=2"]


@losses.register("clip_ppo_nan_at_iteration_3")
class NaNAtIteration3(ClipPPOLoss):
    calls = 0

    def forward(self, tensordict):
        out = super().forward(tensordict)
        type(self).calls += 1
        if type(self).calls > 2 * 16:  # 16 minibatch steps per iteration
            out["loss_objective"] = out["loss_objective"] * float("nan")
        return out


def test_periodic_checkpoints_keep_the_newest(tmp_path):
    train(compose_config(*SMALL, "checkpoint.interval=2048", "checkpoint.keep=2"), tmp_path, make_logger=Logger)
    kept = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert kept == ["checkpoint_000000006144.pt", "checkpoint_000000008192.pt"]
    periodic = torch.load(tmp_path / "checkpoints" / kept[-1], weights_only=False)
    final = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert periodic["frames"] == final["frames"] == 8192 and periodic["iteration"] == 8
    assert set(periodic["rng"]) == {"python", "numpy", "torch"}
    for key, value in final["actor"].items():
        torch.testing.assert_close(periodic["actor"][key], value)


def test_non_finite_loss_stops_with_the_last_finite_parameters_saved(tmp_path):
    NaNAtIteration3.calls = 0
    cfg = compose_config(*SMALL, "loss.name=clip_ppo_nan_at_iteration_3")
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss: loss_objective=nan, .* at iteration 3 \(3072 frames\)"):
        train(cfg, tmp_path, make_logger=Logger)
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert saved["iteration"] == 3 and saved["resumable"] is False
    assert all(torch.isfinite(value).all() for value in saved["actor"].values())
    with pytest.raises(ConfigError, match="not a resumable state"):
        latest_resumable(tmp_path / "checkpoint.pt")


@losses.register("clip_ppo_nan_gradient")
class NaNGradient(ClipPPOLoss):
    """Finite loss terms whose gradient is NaN: d sqrt(u)/du at u = 0 is inf, times du/dp = 0."""

    def forward(self, tensordict):
        out = super().forward(tensordict)
        weight = next(self.actor_network.parameters())
        out["loss_objective"] = out["loss_objective"] + (weight.sum() * 0).sqrt()
        return out


def test_non_finite_gradient_stops_naming_the_parameters(tmp_path):
    with pytest.raises(NonFiniteLoss, match=r"non-finite gradient \(loss terms finite\) of: .*weight.* at iteration 1"):
        train(compose_config(*SMALL, "loss.name=clip_ppo_nan_gradient"), tmp_path, make_logger=Logger)


class Records(Logger):
    def __init__(self):
        self.rows = []

    def log(self, metrics, step):
        self.rows.append(metrics)


def test_on_nan_skip_drops_the_bad_updates_and_counts_them(tmp_path):
    NaNAtIteration3.calls = 0
    records = Records()
    cfg = compose_config(*SMALL, "loss.name=clip_ppo_nan_at_iteration_3", "trainer.on_nan=skip")
    train(cfg, tmp_path, make_logger=lambda: records)
    assert [row["train/skipped_batches"] for row in records.rows] == [0, 0, 16, 32, 48, 64, 80, 96]
    assert ["loss_objective" in row for row in records.rows] == [True, True] + [False] * 6
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    assert all(torch.isfinite(value).all() for value in saved["actor"].values())


@pytest.mark.e2e
def test_evaluate_reads_everything_from_the_checkpoint(tmp_path):
    train(compose_config(*SMALL), tmp_path, make_logger=Logger)
    returns = evaluate_checkpoint(tmp_path, episodes=3, seed=5)
    assert returns.shape == (3,) and (returns >= 8).all()  # CartPole episodes last at least 8 steps
    torch.testing.assert_close(returns, evaluate_checkpoint(tmp_path / "checkpoint.pt", episodes=3, seed=5))

    result = subprocess.run([sys.executable, "-m", "rlexp.evaluate", str(tmp_path), "episodes=3", "seed=5"],
                            capture_output=True, text=True)
    assert result.returncode == 0 and f"mean return: {returns.mean():.2f}" in result.stdout


def test_missing_and_corrupt_checkpoints_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        evaluate_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(ConfigError, match="holds no intact rlexp checkpoint"):
        evaluate_checkpoint(tmp_path)
    foreign = tmp_path / "foreign.pt"
    torch.save({"config": {}, "actor": {}}, foreign)
    with pytest.raises(ConfigError, match="not an rlexp checkpoint"):
        evaluate_checkpoint(foreign)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(foreign.read_bytes()[: len(foreign.read_bytes()) // 2])
    with pytest.raises(ConfigError, match="is corrupt"):
        evaluate_checkpoint(corrupt)
