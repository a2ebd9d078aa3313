"""Observation and reward normalisation against straightforward references over the same streams."""

import numpy as np
import pytest
import torch

from rlexp.envs import NormalizeConfig, Normalizer, RunningMeanStd, build_env, stack_steps
from rlexp.registry import ConfigError


def test_running_mean_std_equals_numpy_over_the_concatenated_stream():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)) * [1, 10, 0.1] for n in (1, 7, 16, 16, 5)]
    rms = RunningMeanStd((3,), epsilon=1e-4)
    for batch in batches:
        rms.update(batch)
    # the prior counts as epsilon samples at mean 0, variance 1
    stream = np.concatenate(batches)
    count = 1e-4 + len(stream)
    mean = stream.sum(0) / count
    m2 = ((stream - mean) ** 2).sum(0) + 1e-4 * (1.0 + mean**2)
    assert rms.count == pytest.approx(count)
    np.testing.assert_allclose(rms.mean, mean, rtol=1e-9)
    np.testing.assert_allclose(rms.var, m2 / count, rtol=1e-9)
    np.testing.assert_allclose(rms.mean, stream.mean(0), rtol=1e-4)
    np.testing.assert_allclose(rms.var, stream.var(0), rtol=1e-4)


def test_observations_normalised_then_clipped_with_the_updated_statistics():
    config = NormalizeConfig(observation=True, clip_observation=1.5)
    normalizer = Normalizer(config, (2,), num_envs=4)
    rng = np.random.default_rng(1)
    seen = []
    for _ in range(5):
        obs = rng.normal(size=(4, 2)) * [1.0, 50.0]
        final = rng.normal(size=(4, 2))
        seen.append(obs)
        out, out_final = normalizer.observations(obs, final)
        stream = np.concatenate(seen)
        mean, var = stream.mean(0), stream.var(0)  # the epsilon prior is negligible after 4 samples
        np.testing.assert_allclose(out, np.clip((obs - mean) / np.sqrt(var + 1e-8), -1.5, 1.5), atol=1e-4)
        # the final observations of this step are scaled by the very same statistics
        np.testing.assert_allclose(out_final, np.clip((final - mean) / np.sqrt(var + 1e-8), -1.5, 1.5), atol=1e-4)
        assert out.dtype == np.float32


def test_rewards_scaled_by_the_std_of_the_discounted_return_restarted_at_episode_ends():
    gamma, clip = 0.9, 2.0
    normalizer = Normalizer(NormalizeConfig(reward=True, gamma=gamma, clip_reward=clip), (1,), num_envs=3)
    rng = np.random.default_rng(2)
    returns, history = np.zeros(3), []
    for t in range(40):
        reward = rng.normal(1.0, 3.0, size=3)
        done = rng.random(3) < 0.2
        out = normalizer.rewards(reward, done)
        # loop reference: per env R = gamma * R + r; the scale is the std of every R so far
        for i in range(3):
            returns[i] = gamma * returns[i] + reward[i]
        history.extend(returns)
        std = np.sqrt(np.var(history) * len(history) / (len(history) + 1e-4) + 1e-8)
        np.testing.assert_allclose(out, np.clip(reward / std, -clip, clip), rtol=1e-3)
        for i in range(3):
            if done[i]:  # terminated or truncated: the next episode's return starts from zero
                returns[i] = 0.0
    np.testing.assert_allclose(normalizer.returns, returns)


def test_a_frozen_copy_never_moves_and_leaves_rewards_raw():
    normalizer = Normalizer(NormalizeConfig(observation=True, reward=True), (2,), num_envs=2)
    normalizer.observations(np.array([[1.0, 2.0], [3.0, 4.0]]))
    frozen = normalizer.frozen_copy(num_envs=5)
    before = frozen.state_dict()
    obs = np.full((5, 2), 100.0)
    out = frozen.observations(obs)[0]
    np.testing.assert_allclose(out, np.clip((obs - before["obs_rms"]["mean"]) /
                                            np.sqrt(before["obs_rms"]["var"] + 1e-8), -10, 10), rtol=1e-6)
    np.testing.assert_array_equal(frozen.state_dict()["obs_rms"]["mean"], before["obs_rms"]["mean"])
    reward = np.array([3.0, -1.0, 0.5, 2.0, 7.0])
    assert frozen.rewards(reward, np.zeros(5, bool)) is reward
    assert normalizer.obs_rms.count == pytest.approx(2 + 1e-4)  # the source is untouched too


def test_env_reports_raw_returns_and_bootstraps_from_the_normalised_final_observation():
    config = {"name": "gym", "id": "Pendulum-v1", "num_envs": 2, "max_episode_steps": 5,
              "normalize": {"observation": True, "reward": True}}
    plain, normalised = build_env({**config, "normalize": {}}), build_env(config)
    raw_root, root = plain.reset(seed=0), normalised.reset(seed=0)
    raw_steps, steps, stats = [], [], []
    for _ in range(7):
        action = torch.full((2, 1), 0.5)
        raw_step, raw_root = plain.step_and_maybe_reset({**raw_root, "action": action})
        step, root = normalised.step_and_maybe_reset({**root, "action": action})
        raw_steps.append(raw_step)
        steps.append(step)
        stats.append(normalised.normalizer.obs_rms.state_dict())
    raw, out = stack_steps(raw_steps), stack_steps(steps)
    assert out["next", "truncated"][:, 4].all() and not out["next", "truncated"][:, :4].any()
    for t in range(7):  # every next observation, the truncated step's true final one included, and the next
        # root observation (the reset one after truncation) are scaled by the statistics of that step
        mean, std = stats[t]["mean"], np.sqrt(stats[t]["var"] + 1e-8)
        expected = np.clip((raw["next", "observation"][:, t].numpy() - mean) / std, -10, 10)
        np.testing.assert_allclose(out["next", "observation"][:, t].numpy(), expected, rtol=1e-5, atol=1e-6)
        if t + 1 < 7:
            expected_root = np.clip((raw["observation"][:, t + 1].numpy() - mean) / std, -10, 10)
            np.testing.assert_allclose(out["observation"][:, t + 1].numpy(), expected_root, rtol=1e-5, atol=1e-6)
    # raw env returns are what is reported, whatever is normalised
    np.testing.assert_allclose(normalised.pop_finished_episodes()["return"],
                               raw["next", "reward"][:, :5].sum(1).squeeze(-1).numpy(), rtol=1e-5)
    assert not np.allclose(out["next", "reward"].numpy(), raw["next", "reward"].numpy())
    # statistics see the reset and every step's observations (after a truncation, the reset one), never final ones
    assert normalised.normalizer.obs_rms.count == pytest.approx(2 * 8 + 1e-4)


def test_bad_normalisation_settings_are_named():
    base = {"name": "gym", "id": "Pendulum-v1", "num_envs": 2}
    with pytest.raises(ConfigError, match=r"env.normalize.clip_observation=-1 must be a number > 0"):
        build_env({**base, "normalize": {"observation": True, "clip_observation": -1}})
    with pytest.raises(ConfigError, match=r"unknown keys \['obs'\]; accepted: observation, reward"):
        build_env({**base, "normalize": {"obs": True}})
    with pytest.raises(ConfigError, match=r"env.normalize.reward='yes' must be true or false"):
        build_env({**base, "normalize": {"reward": "yes"}})
