"""The env wrapper's tensordict layout, and that ("next", "observation") is the true final observation."""

import numpy as np
import pytest
import torch

from rlexp.envs import stack_steps
from rlexp.envs.gym import make_gym_env
from rlexp.registry import ConfigError


def cartpole_step(obs, action):
    """CartPole-v1's Euler dynamics (gymnasium's documented constants), one row per env."""
    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    total_mass, polemass_length = masscart + masspole, masspole * length
    x, x_dot, theta, theta_dot = obs.T
    force = np.where(action == 1, force_mag, -force_mag)
    cos, sin = np.cos(theta), np.sin(theta)
    temp = (force + polemass_length * theta_dot**2 * sin) / total_mass
    theta_acc = (gravity * sin - cos * temp) / (length * (4.0 / 3.0 - masspole * cos**2 / total_mass))
    x_acc = temp - polemass_length * theta_acc * cos / total_mass
    return np.stack([x + tau * x_dot, x_dot + tau * x_acc, theta + tau * theta_dot, theta_dot + tau * theta_acc], 1)


def pendulum_step(obs, torque):
    """Pendulum-v1's dynamics (g=10, m=l=1, dt=0.05, speed clipped to 8) on [cos, sin, speed] observations."""
    theta, speed = np.arctan2(obs[:, 1], obs[:, 0]), obs[:, 2]
    torque = np.clip(torque[:, 0], -2.0, 2.0)
    speed = np.clip(speed + (3 * 10.0 / 2 * np.sin(theta) + 3.0 * torque) * 0.05, -8, 8)
    theta = theta + speed * 0.05
    return np.stack([np.cos(theta), np.sin(theta), speed], 1)


def rollout(env, steps, seed, sample_action):
    td, out = env.reset(seed=seed), []
    for _ in range(steps):
        td["action"] = sample_action()
        td, next_td = env.step_and_maybe_reset(td)
        out.append(td)
        td = next_td
    return stack_steps(out)


def test_layout_keys_shapes_and_dtypes():
    env = make_gym_env(id="CartPole-v1", num_envs=3)
    data = rollout(env, 4, 0, lambda: torch.randint(0, 2, (3,)))
    assert data.batch_size == (3, 4)
    assert set(data.keys(include_nested=True, leaves_only=True)) == {
        "observation", "action", "done", "terminated", "truncated", "is_init",
        ("next", "observation"), ("next", "reward"), ("next", "done"), ("next", "terminated"), ("next", "truncated")}
    assert data["observation"].shape == (3, 4, 4) and data["observation"].dtype == torch.float32
    assert data["next", "reward"].shape == (3, 4, 1)
    for key in ["done", "terminated", "truncated", "is_init", ("next", "done")]:
        assert data[key].shape == (3, 4, 1) and data[key].dtype == torch.bool
    assert data["is_init"][:, 0].all() and not data["is_init"][:, 1:].any()
    # Without episode ends, each next observation is the following root observation.
    torch.testing.assert_close(data["next", "observation"][:, :-1], data["observation"][:, 1:])


@pytest.mark.parametrize("id, num_envs, act, dynamics", [
    ("CartPole-v1", 4, lambda n: torch.randint(0, 2, (n,)), cartpole_step),      # numpy-vectorised entry point
    ("Pendulum-v1", 3, lambda n: 4 * torch.rand(n, 1) - 2, pendulum_step),        # sync vector env, Box actions
])
def test_truncated_episode_keeps_its_true_final_observation(id, num_envs, act, dynamics):
    env = make_gym_env(id=id, num_envs=num_envs, max_episode_steps=5)
    data = rollout(env, 12, 3, lambda: act(num_envs))
    truncated = data["next", "truncated"].squeeze(-1)
    assert truncated[:, [4, 9]].all() and truncated.sum() == 2 * num_envs
    assert (data["next", "done"].squeeze(-1) == truncated | data["next", "terminated"].squeeze(-1)).all()
    expected = dynamics(data["observation"].reshape(-1, data["observation"].shape[-1]).double().numpy(),
                        data["action"].reshape(num_envs * 12, *data["action"].shape[2:]).numpy())
    np.testing.assert_allclose(data["next", "observation"].reshape(expected.shape).numpy(), expected,
                               rtol=1e-4, atol=1e-4)
    # After the end, the root observation is a fresh episode's, flagged is_init.
    assert data["is_init"][:, [5, 10]].all()
    assert not torch.allclose(data["observation"][:, 5], data["next", "observation"][:, 4])


def test_episode_statistics_count_finished_episodes():
    env = make_gym_env(id="CartPole-v1", num_envs=2, max_episode_steps=5)
    data = rollout(env, 10, 0, lambda: torch.randint(0, 2, (2,)))
    episodes = env.pop_finished_episodes()
    done = data["next", "done"].squeeze(-1)
    assert len(episodes["return"]) == done.sum()
    # Every step up to each env's last episode end belongs to a finished episode; CartPole pays 1 per step.
    steps_in_finished = sum(int(row.nonzero().max()) + 1 for row in done if row.any())
    assert episodes["length"].sum() == steps_in_finished
    np.testing.assert_array_equal(episodes["return"], episodes["length"])
    assert env.pop_finished_episodes()["return"].size == 0


def test_unknown_env_id_suggests_close_names():
    with pytest.raises(ConfigError, match=r"'CartPole-v9' is not a registered gymnasium environment.*CartPole-v1"):
        make_gym_env(id="CartPole-v9")
    with pytest.raises(ConfigError, match="num_envs must be >= 1, got 0"):
        make_gym_env(id="CartPole-v1", num_envs=0)


def test_per_env_seeds_repeat_the_whole_run_resets_included():
    """A list of seeds (GRPO's groups) fixes the initial states and the env's RNG that draws later resets: two
    fresh envs give the same steps through many episodes."""
    def steps():
        env = make_gym_env(id="CartPole-v1", num_envs=4)
        always_right = lambda: torch.ones(4, dtype=torch.long)  # noqa: E731  (episodes end in ~10 steps)
        return rollout(env, 100, [5, 5, 9, 9], always_right)

    first, second = steps(), steps()
    assert first["next", "done"].sum() >= 20  # resets happened
    start = first["observation"][:, 0]
    assert torch.equal(start[0], start[1]) and torch.equal(start[2], start[3]) and not torch.equal(start[0], start[2])
    for key in ["observation", ("next", "observation"), ("next", "done")]:
        assert torch.equal(first[key], second[key]), key
