"""``python -m rlexp`` end to end in a subprocess, the way a user runs it."""

import json

import pytest
import torch
import yaml

from omegaconf import OmegaConf

from support import compose_config, read_wandb_run, run_cli
from rlexp.registry import losses, policies, value_estimators
from rlexp.collector import Collector
from rlexp.envs import build_env

pytestmark = pytest.mark.e2e  # every test here runs python -m rlexp in a subprocess

OVERRIDES = ["collector.total_frames=4096", "collector.frames_per_batch=1024", "env.num_envs=8",
             "eval.interval=2048", "eval.episodes=2", "seed=1"]


def loss_output_keys(config: dict) -> set[str]:
    """Keys the configured loss returns, from running it here on a freshly collected batch."""
    env = build_env(config["env"])
    actor, critic = policies.build(config["policy"], env.observation_space, env.action_space)
    loss = losses.build(config["loss"], actor, critic)
    loss.make_value_estimator(value_estimators.build(config["value_estimator"], value_network=critic))
    batch = Collector(env, actor, 64, torch.device("cpu"), seed=0).collect()
    with torch.no_grad():
        loss.value_estimator(batch)
    return set(loss(batch.reshape(-1)).keys())


def test_short_run_writes_config_metrics_checkpoint_and_wandb_run(run_dir):
    result = run_cli(run_dir, *OVERRIDES)
    assert result.returncode == 0, result.stderr
    assert "4.10k/4.10k" in result.stderr and "fps=" in result.stderr and "ret=" in result.stderr

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["loss"]["name"] == "clip_ppo" and config["collector"]["total_frames"] == 4096
    assert config == OmegaConf.to_container(compose_config(*OVERRIDES), resolve=True)  # one composition

    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["frames"] for r in records] == [1024, 2048, 3072, 4096]
    assert "eval/episode_return" in records[1] and "eval/episode_return" in records[3]

    checkpoint = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert checkpoint["frames"] == 4096 and checkpoint["config"] == config

    wandb_records = read_wandb_run(run_dir)
    (run,) = [r["run"] for r in wandb_records if r["type"] == "run"]
    assert run["display_name"] == ",".join(OVERRIDES)
    assert run["run_group"] == "default" and run["project"] == "rlexp"
    assert run["config"]["update"]["loss.clip_epsilon"] == 0.2
    assert run["config"]["update"]["hydra/overrides"] == OVERRIDES
    history = [r["history"]["item"] for r in wandb_records if r["type"] == "history"]
    assert [h["frames"] for h in history] == [1024, 2048, 3072, 4096]
    expected = loss_output_keys(config) | {"train/episode_return", "train/episode_length", "train/fps",
                                            "train/lr", "train/grad_norm"}
    assert {"loss_objective", "loss_critic", "loss_entropy", "ESS", "clip_fraction", "kl_approx"} <= expected
    for item in history:
        assert expected <= item.keys(), expected - item.keys()
    assert history[-1]["eval/episode_return"] == records[-1]["eval/episode_return"]
    assert [r["exit"]["exit_code"] for r in wandb_records if r["type"] == "exit"] == [0]


def test_user_loss_registered_through_imports(run_dir, tmp_path):
    tests_dir = __import__("pathlib").Path(__file__).parent
    result = run_cli(run_dir, *OVERRIDES, "logger=csv", "imports=[user_loss]", "+loss.l2_coeff=0.001",
                     "loss.name=clip_ppo_with_l2", pythonpath=tests_dir)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(r["loss_l2"] > 0 for r in records)
    assert not (run_dir / "wandb").exists()


def test_config_errors_exit_before_any_run_starts(run_dir):
    result = run_cli(run_dir, "device=cuda")
    assert result.returncode == 2
    assert "device=cuda was requested but CUDA is not available" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (run_dir / "wandb").exists() and not (run_dir / "metrics.jsonl").exists()

    result = run_cli(run_dir, "loss.name=clip_ppoo")
    assert result.returncode == 2 and "Unknown losses 'clip_ppoo'" in result.stderr and "clip_ppo" in result.stderr

    result = run_cli(run_dir, "loss.loss_critic_type=l3")
    assert result.returncode == 2 and "'l3'" in result.stderr and "l1, l2, smooth_l1" in result.stderr

    result = run_cli(run_dir, "env=gym", "env.id=CartPole-v9")
    assert result.returncode == 2 and "Did you mean: CartPole-v1" in result.stderr

    result = run_cli(run_dir, "loss=nope")
    assert result.returncode == 1 and "Available options in 'loss'" in result.stderr and "clip_ppo" in result.stderr


def test_grpo_headline_command_selects_its_own_defaults(run_dir):
    result = run_cli(run_dir, "loss=grpo", "env=cartpole", "collector.total_frames=2000", "env.num_envs=16",
                     "eval.episodes=2", "loss.kl_to_ref_coeff=0.01", "logger=csv")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["value_estimator"]["name"] == "group_relative" and config["policy"]["critic"] is False
    assert config["collector"]["group_size"] == 8
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        assert {"loss_objective", "loss_kl_to_ref", "kl_to_ref", "ESS", "clip_fraction", "kl_approx",
                "train/group_return_mean", "train/group_return_std", "train/equal_return_group_fraction",
                "train/truncated_episodes", "train/episode_return"} <= record.keys()
        assert record["train/episodes"] == 16  # one whole episode per env, padding excluded
    assert records[-1]["frames"] >= 2000 and "eval/episode_return" in records[-1]

    result = run_cli(run_dir.with_name("other_run"), "loss=grpo", "value_estimator=gae")
    assert result.returncode == 2 and "value_estimator=group_relative" in result.stderr
