"""Continuous control through the trainer: normalisation statistics in training, evaluation, checkpoints and
resume; unclipped Gaussian actions; tuned defaults per env; MuJoCo; a missing optional package."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from support import ROOT, cli_env, compose_config, run_cli
from rlexp.checkpoint import load_checkpoint
from rlexp.collector import Collector
from rlexp.config import settings_of
from rlexp.envs import build_env
from rlexp.evaluate import evaluate_checkpoint
from rlexp.loggers import Logger
from rlexp.policies import rollout_policy
from rlexp.registry import policies
from rlexp.trainer import train

PENDULUM = ["env=pendulum", "logger=none", "seed=4", "collector.total_frames=4096", "collector.frames_per_batch=1024",
            "env.num_envs=4", "optim.num_minibatches=4", "optim.ppo_epochs=2", "eval.episodes=3"]
MUJOCO_ENVS = ["halfcheetah", "hopper", "walker2d", "ant", "humanoid", "swimmer", "inverted_pendulum",
               "inverted_double_pendulum"]


class Recorder(Logger):
    def __init__(self):
        self.rows = []

    def log(self, metrics, step):
        self.rows.append({"step": step, **metrics})


def metrics_without_timing(rows):
    return [{k: v for k, v in row.items() if not k.startswith(("train/fps", "train/seconds", "train/time_"))}
            for row in rows]


def test_evaluation_reads_the_frozen_training_statistics_and_rlexp_evaluate_reproduces_it(tmp_path):
    recorder = Recorder()
    result = train(compose_config(*PENDULUM, "eval.interval=1000000"), tmp_path, make_logger=lambda: recorder)
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    training, evaluation = saved["collector"]["env"]["normalizer"], saved["eval_env"]["normalizer"]
    # the statistics learned from training observations only: the reset and every collected step ...
    assert training["obs_rms"]["count"] == pytest.approx(4 + 4096 + 1e-4)
    # ... and evaluation ran with an exact copy of them, which it did not move
    for key in ("mean", "var", "count"):
        assert np.array_equal(training["obs_rms"][key], evaluation["obs_rms"][key])
    # the only evaluation is the final one (first evaluation seed: seed + 1_000_003)
    returns = evaluate_checkpoint(tmp_path, seed=4 + 1_000_003)
    assert float(returns.mean()) == pytest.approx(result["eval/episode_return"], rel=1e-6)
    # without the statistics the same policy acts on other inputs, so the check above is not vacuous
    unnormalised = dict(saved, collector={**saved["collector"], "env": {**saved["collector"]["env"], "normalizer": None}})
    torch.save(unnormalised, tmp_path / "plain.pt")
    assert float(evaluate_checkpoint(tmp_path / "plain.pt", seed=4 + 1_000_003).mean()) != pytest.approx(
        result["eval/episode_return"], rel=1e-6)


def test_resume_with_normalisation_is_bit_identical(tmp_path):
    args = [*PENDULUM, "collector.total_frames=6144", "checkpoint.interval=3072", "eval.interval=2048"]
    for folder in ("whole", "resumed"):
        (tmp_path / folder).mkdir()
    whole = Recorder()
    train(compose_config(*args), tmp_path / "whole", make_logger=lambda: whole)
    checkpoint = load_checkpoint(tmp_path / "whole" / "checkpoints" / "checkpoint_000000003072.pt")
    resumed = Recorder()
    train(compose_config(*args), tmp_path / "resumed", make_logger=lambda: resumed, resume=checkpoint)
    final = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert len(whole.rows) == 6 and metrics_without_timing(resumed.rows) == metrics_without_timing(whole.rows)[3:]
    reference = load_checkpoint(tmp_path / "whole" / "checkpoint.pt")
    for key, value in reference["loss"].items():
        assert torch.equal(final["loss"][key], value), key
    for name in ("obs_rms", "return_rms"):
        for key in ("mean", "var"):
            assert np.array_equal(final["collector"]["env"]["normalizer"][name][key],
                                  reference["collector"]["env"]["normalizer"][name][key])


def test_gaussian_actions_are_stored_and_scored_unclipped():
    cfg = compose_config(*PENDULUM, "policy.log_std_init=1.5")
    env = build_env(cfg.env)
    actor, critic = policies.build(cfg.policy, env.observation_space, env.action_space)
    rollout = Collector(env, rollout_policy(actor, critic), 512, torch.device("cpu"), seed=0).collect()
    action = rollout["action"]
    assert action.abs().max() > 2.5, "with std e^1.5 some samples leave the [-2, 2] bounds"
    dist = actor.get_dist(rollout.select("observation"))
    torch.testing.assert_close(rollout["action_log_prob"], dist.log_prob(action))  # the unclipped sample's log-prob
    clipped = dist.log_prob(action.clamp(-2, 2))
    assert not torch.allclose(rollout["action_log_prob"], clipped)


@pytest.mark.e2e
def test_tuned_file_is_printed_recorded_and_loses_to_the_command_line(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(run_dir, "env=pendulum", "logger=csv", "collector.total_frames=2048", "optim.lr=0.0003",
                     "eval.episodes=2")
    assert result.returncode == 0, result.stderr
    assert "rlexp: tuned=pendulum (conf/tuned/pendulum.yaml) sets env.num_envs=16" in result.stderr
    assert "optim.lr=0.0003 (file: 0.001, overridden)" in result.stderr
    saved = OmegaConf.load(run_dir / "config.yaml")
    tuned = OmegaConf.load(ROOT / "conf" / "tuned" / "pendulum.yaml")
    assert saved.optim.lr == 0.0003 and saved.value_estimator.gamma == tuned.value_estimator.gamma
    assert saved.optim.num_minibatches == tuned.optim.num_minibatches != 4  # the file's, not conf/config.yaml's
    assert json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["frames"] == 4096  # the tuned batch


@pytest.mark.parametrize("env", MUJOCO_ENVS)
def test_cleanrl_preset_overrides_every_tuned_key(env):
    _, tuned = settings_of("tuned", env)
    preset = compose_config("+experiment=cleanrl_mujoco", f"env={env}")
    _, cleanrl = settings_of("experiment", "cleanrl_mujoco")
    assert set(tuned) <= set(cleanrl), f"conf/tuned/{env}.yaml sets keys the preset leaves to it"
    for key in tuned:
        assert OmegaConf.select(preset, key) == cleanrl[key], key


def test_grpo_keeps_its_collection_on_a_tuned_env_and_refuses_reward_normalisation():
    cfg = compose_config("loss=grpo", "env=pendulum")
    assert cfg.env.num_envs == 64 and cfg.collector.group_size == 8 and not cfg.env.normalize.reward
    assert cfg.env.normalize.observation and cfg.value_estimator.name == "group_relative"


def test_a_short_hopper_run_trains_and_resumes_bit_identically(tmp_path):
    """MuJoCo envs pickle as their constructor arguments; the checkpoint carries their simulation and RNG."""
    args = ["env=hopper", "logger=none", "collector.total_frames=8192", "checkpoint.interval=4096",
            "eval.interval=4096", "eval.episodes=2", "optim.num_minibatches=4", "optim.ppo_epochs=2"]
    for folder in ("whole", "resumed"):
        (tmp_path / folder).mkdir()
    whole, resumed = Recorder(), Recorder()
    result = train(compose_config(*args), tmp_path / "whole", make_logger=lambda: whole)
    assert result["frames"] == 8192 and result["eval/episode_length"] > 0
    checkpoint = load_checkpoint(tmp_path / "whole" / "checkpoints" / "checkpoint_000000004096.pt")
    assert checkpoint["config"]["env"]["id"] == "Hopper-v5"
    assert checkpoint["collector"]["env"]["normalizer"]["obs_rms"]["mean"].shape == (11,)
    train(compose_config(*args), tmp_path / "resumed", make_logger=lambda: resumed, resume=checkpoint)
    assert metrics_without_timing(resumed.rows) == metrics_without_timing(whole.rows)[2:]
    final, reference = (load_checkpoint(tmp_path / f / "checkpoint.pt") for f in ("resumed", "whole"))
    for key, value in reference["loss"].items():
        assert torch.equal(final["loss"][key], value), key


@pytest.mark.e2e
def test_missing_mujoco_is_one_line_and_exit_2(tmp_path):
    code = ("import runpy, sys; sys.modules['mujoco'] = None; "  # as if the package were not installed
            f"sys.argv = ['rlexp', 'env=hopper', 'hydra.run.dir={tmp_path / 'run'}']; "
            "runpy.run_module('rlexp', run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(tmp_path),
                            cwd=ROOT, timeout=300)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("rlexp: configuration error")]
    assert len(errors) == 1 and "env.id=Hopper-v5 needs a package that is not installed" in errors[0]
    assert "pip install -e '.[mujoco]'" in errors[0] and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "wandb").exists()


@pytest.mark.parametrize("env", MUJOCO_ENVS)
def test_every_mujoco_option_builds_normalised_and_steps(env):
    cfg = compose_config(f"env={env}", "env.num_envs=2")
    built = build_env(cfg.env)
    root = built.reset(seed=0)
    action = torch.zeros(2, *built.action_space.shape)
    step, _ = built.step_and_maybe_reset({**root, "action": action})
    assert built.name.endswith("-v5") and built.normalizer is not None
    assert torch.isfinite(step["next", "observation"]).all() and step["next", "observation"].shape[0] == 2
    built.close()


def test_the_benchmarks_time_limit_variant_reports_the_limit_as_a_termination():
    """experiments/benchmarks/time_limit_terminates.py (CleanRL's handling of time limits, a benchmark config)."""
    import gymnasium as gym

    module = benchmark_module("time_limit_terminates")
    env = module.make("Pendulum-v1", max_episode_steps=3)  # Pendulum never terminates by itself
    env.reset(seed=0)
    assert [tuple(env.step(env.action_space.sample())[2:4]) for _ in range(3)] == \
        [(False, False), (False, False), (True, False)]
    assert gym.spec("Walker2dTimeLimitTerminates-v4").max_episode_steps is None  # no second, truncating limit
    assert gym.make("Walker2dTimeLimitTerminates-v4").spec.kwargs["wrapped_id"] == "Walker2d-v4"


def test_the_benchmarks_gymnasium029_variant_normalises_by_gymnasium_029s_formulas(monkeypatch):
    """experiments/benchmarks/gymnasium029_normalizer.py (CleanRL's normalisation semantics, a benchmark config)
    against the formulas in cleanrl_lockstep.py, which reproduce gymnasium 0.29's wrappers on CleanRL's stream."""
    import gymnasium as gym

    from rlexp.envs import Normalizer, TensorDictVectorEnv

    formulas = benchmark_module("cleanrl_lockstep").normalised
    actions = np.random.default_rng(0).uniform(-1, 1, (300, 3)).astype(np.float32)
    raw = gym.make("Hopper-v5", max_episode_steps=15)  # falls (terminations) and time limits (truncations)
    events = [(torch.tensor(raw.reset(seed=0)[0]), None, None, None)]
    for action in actions:
        obs, reward, terminated, truncated, _ = raw.step(action)
        events.append((torch.tensor(obs), float(reward), terminated, truncated))
        if terminated or truncated:
            events.append((torch.tensor(raw.reset()[0]), None, None, None))
    ends = [event[2:] for event in events if event[2] is not None and (event[2] or event[3])]
    assert (True, False) in ends and (False, True) in ends
    expected = formulas(events, gamma=0.99)  # before the variant's import: "rlexp" runs rlexp's Normalizer
    expected_observations, expected_rewards = expected["gymnasium 0.29"]
    assert not np.allclose(expected["rlexp"][1], expected_rewards, rtol=1e-3)  # the two semantics do differ here

    # importing the variant patches these two; monkeypatch restores rlexp's after the test
    monkeypatch.setattr(TensorDictVectorEnv, "step_and_maybe_reset", TensorDictVectorEnv.step_and_maybe_reset)
    monkeypatch.setattr(Normalizer, "rewards", Normalizer.rewards)
    benchmark_module("gymnasium029_normalizer")
    env = build_env({"name": "gym", "id": "Hopper-v5", "num_envs": 1, "max_episode_steps": 15,
                     "normalize": {"observation": True, "reward": True, "gamma": 0.99}})
    root = env.reset(seed=0)
    observations, rewards = [root["observation"][0]], []
    for action in actions:
        step, root = env.step_and_maybe_reset({**root, "action": torch.from_numpy(action)[None]})
        observations.append(root["observation"][0])
        rewards.append(float(step["next", "reward"]))
    env.close()
    assert np.allclose(np.stack(observations), expected_observations, atol=1e-6)
    assert np.allclose(rewards, expected_rewards, rtol=1e-6)


def benchmark_module(name: str):
    """A module of experiments/benchmarks/, imported from its file (the folder is not a package on the path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
