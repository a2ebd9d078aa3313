"""env.observation_indices / observation_scale: the chosen entries of the full observations (scaled), final ones too."""

import pytest
import torch

from rlexp.envs.gym import make_gym_env
from rlexp.registry import ConfigError


@pytest.mark.parametrize("env_id, indices", [("CartPole-v1", [0, 2]), ("Pendulum-v1", [2, 0])])
def test_masked_env_shows_the_chosen_entries_of_the_full_observation(env_id, indices):
    full = make_gym_env(id=env_id, num_envs=3, max_episode_steps=5)
    masked = make_gym_env(id=env_id, num_envs=3, max_episode_steps=5, observation_indices=indices)
    assert masked.observation_space.shape == (len(indices),)
    td_full, td_masked = full.reset(seed=3), masked.reset(seed=3)
    assert td_masked["observation"].shape == (3, len(indices))
    ends = 0
    for _ in range(12):
        torch.testing.assert_close(td_masked["observation"], td_full["observation"][:, indices])
        action = torch.as_tensor(full.action_space.sample()).expand(3, *full.action_space.shape).clone()
        step_full, td_full = full.step_and_maybe_reset({**td_full, "action": action})
        step_masked, td_masked = masked.step_and_maybe_reset({**td_masked, "action": action.clone()})
        torch.testing.assert_close(step_masked["next", "observation"], step_full["next", "observation"][:, indices])
        ends += int(step_full["next", "done"].sum())
    assert ends > 0  # final observations of ended episodes were compared too


@pytest.mark.parametrize("indices", [[4], [0, 0], []])
def test_invalid_indices_are_config_errors(indices):
    with pytest.raises(ConfigError):
        make_gym_env(id="CartPole-v1", num_envs=2, observation_indices=indices)


def test_scaled_observations_and_bounds():
    full = make_gym_env(id="CartPole-v1", num_envs=3, max_episode_steps=5)
    scaled = make_gym_env(id="CartPole-v1", num_envs=3, max_episode_steps=5, observation_indices=[2, 0],
                          observation_scale=[10.0, 0.5])
    scale = torch.tensor([10.0, 0.5])
    low, high = full.observation_space.low[[2, 0]], full.observation_space.high[[2, 0]]
    assert (scaled.observation_space.low == low * scale.numpy()).all()
    assert (scaled.observation_space.high == high * scale.numpy()).all()
    td_full, td_scaled = full.reset(seed=3), scaled.reset(seed=3)
    for _ in range(8):
        torch.testing.assert_close(td_scaled["observation"], td_full["observation"][:, [2, 0]] * scale)
        action = torch.ones(3, dtype=torch.long)
        step_full, td_full = full.step_and_maybe_reset({**td_full, "action": action})
        step_scaled, td_scaled = scaled.step_and_maybe_reset({**td_scaled, "action": action.clone()})
        expected = step_full["next", "observation"][:, [2, 0]] * scale
        torch.testing.assert_close(step_scaled["next", "observation"], expected)
    only_scaled = make_gym_env(id="CartPole-v1", num_envs=2, observation_scale=[1, 2, 3, 4])
    assert only_scaled.observation_space.shape == (4,)


@pytest.mark.parametrize("scale", [[1.0], [1.0, 0.0], [1.0, -2.0], [1.0, float("inf")]])
def test_invalid_scales_are_config_errors(scale):
    with pytest.raises(ConfigError):
        make_gym_env(id="CartPole-v1", num_envs=2, observation_indices=[0, 2], observation_scale=scale)
