"""Faults that come from the env: non-finite entries, misshapen observations, multi-dimensional Boxes,
state that cannot be pickled, and grouped collection without a time limit."""

import warnings

import numpy as np
import pytest
import torch

import faulty_envs  # noqa: F401  (registers the rlexp_test/* envs)
from support import compose_config, run_cli
from rlexp.checkpoint import load_checkpoint
from rlexp.envs import EnvFault
from rlexp.loggers import Logger
from rlexp.registry import ConfigError
from rlexp.trainer import train

SMALL = ["logger=none", "env=gym", "env.id=rlexp_test/Walk-v0", "env.num_envs=4", "collector.frames_per_batch=256",
         "collector.total_frames=1024", "optim.num_minibatches=2", "eval.episodes=2", "eval.interval=100000"]


@pytest.mark.parametrize("entry, on_nan", [("observation", "raise"), ("reward", "raise"), ("observation", "skip")])
def test_non_finite_env_output_stops_at_collection_naming_env_entry_and_step(tmp_path, entry, on_nan):
    cfg = compose_config(*SMALL, f"+env.kwargs={{nan_at: 97, nan_entry: {entry}}}", f"trainer.on_nan={on_nan}")
    with pytest.raises(EnvFault, match=rf"env rlexp_test/Walk-v0 returned a non-finite {entry} at step 97 "
                                       r"\(sub-env 0: .*nan.*\)\..*checkpoint.pt"):
        train(cfg, tmp_path, make_logger=Logger)
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert not saved["resumable"] and saved["frames"] == 256  # the last finished iteration; collection stopped
    assert all(torch.isfinite(value).all() for value in saved["actor"].values())


@pytest.mark.e2e
def test_env_fault_exits_3_on_the_command_line(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(run_dir, "imports=[faulty_envs]", *SMALL[1:], "+env.kwargs={nan_at: 5, nan_entry: reward}",
                     "logger=csv", pythonpath=faulty_envs.__file__.rsplit("/", 1)[0])
    assert result.returncode == 3, result.stderr
    assert "rlexp: training stopped: env rlexp_test/Walk-v0 returned a non-finite reward at step 5" in result.stderr
    assert "Traceback" not in result.stderr


def test_misshapen_observation_names_the_env_and_both_shapes(tmp_path):
    cfg = compose_config(*SMALL, "+env.kwargs={wrong_shape_at: 3}")
    with pytest.raises(ConfigError, match=r"env rlexp_test/Walk-v0 returned observations of shape \[\(7,\)\] at step 3 "
                                          r"\(sub-envs \[0, 1, 2, 3\]\); its observation space expects \(3,\)"):
        train(cfg, tmp_path, make_logger=Logger)


@pytest.mark.parametrize("distribution", ["normal", "tanh_normal"])
def test_multi_dimensional_box_observations_and_actions_are_flattened_and_reshaped(tmp_path, distribution):
    cfg = compose_config(*SMALL, "+env.kwargs={obs_shape: [2, 3], action_shape: [2, 2]}",
                         f"policy.distribution={distribution}")
    result = train(cfg, tmp_path, make_logger=Logger)
    assert result["frames"] == 1024 and np.isfinite(result["eval/episode_return"])
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["collector"]["root"]["observation"].shape == (4, 6)


def test_env_whose_state_cannot_be_pickled_still_gets_a_checkpoint(tmp_path):
    cfg = compose_config(*SMALL, "env.id=rlexp_test/Unpicklable-v0", "collector.total_frames=512")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(cfg, tmp_path, make_logger=Logger)
    assert any("cannot be pickled" in str(w.message) and "ValueError" not in str(w.category) for w in caught)
    saved = load_checkpoint(tmp_path / "checkpoint.pt")
    assert saved["collector"]["env"]["vector_env"] is None and saved["frames"] == 512


def test_grouped_collection_without_a_time_limit_is_refused_before_training(tmp_path):
    opened = []
    cfg = compose_config(*SMALL, "loss=grpo", "env.id=rlexp_test/Endless-v0", "env.num_envs=8",
                         "+env.kwargs={discrete: true}")
    with pytest.raises(ConfigError, match="env rlexp_test/Endless-v0 has no time limit.*env.max_episode_steps"):
        train(cfg, tmp_path, make_logger=lambda: opened.append(1) or Logger())
    assert not opened
