"""GRPO's grouped whole-episode collection."""

import pytest
import torch

from rlexp.collector import MASK, EpisodeCollector
from rlexp.envs.gym import make_gym_env
from rlexp.registry import policies


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1"])
def test_groups_share_their_start_state_and_padding_is_masked(env_id):
    env = make_gym_env(id=env_id, num_envs=6, max_episode_steps=60)
    actor, _ = policies.build({"name": "mlp", "critic": False}, env.observation_space, env.action_space)
    collector = EpisodeCollector(env, actor, group_size=3, device=torch.device("cpu"), seed=0)
    starts = []
    for _ in range(2):
        rollout = collector.collect()
        start = rollout["observation"][:, 0]
        starts.append(start)
        torch.testing.assert_close(start[0], start[1])
        torch.testing.assert_close(start[0], start[2])
        torch.testing.assert_close(start[3], start[5])
        assert not torch.allclose(start[0], start[3])
        # The mask covers each row's first episode exactly: up to and including its first done.
        mask, done = rollout[MASK], rollout["next", "done"].squeeze(-1)
        first_done = done.int().argmax(-1)
        assert done.any(-1).all()
        expected = torch.arange(rollout.shape[1]) <= first_done[:, None]
        assert torch.equal(mask, expected)
        assert rollout.shape[1] == int(first_done.max()) + 1  # stops once every episode has ended
        episodes = collector.finished_episodes()
        assert episodes["length"].tolist() == mask.sum(-1).tolist()
        assert torch.allclose(torch.as_tensor(episodes["return"]).float(),
                              (rollout["next", "reward"].squeeze(-1) * mask).sum(-1))
    assert not torch.allclose(starts[0], starts[1])  # fresh seeds per call


def test_time_limit_counts_as_truncated():
    env = make_gym_env(id="Pendulum-v1", num_envs=4, max_episode_steps=7)
    actor, _ = policies.build({"name": "mlp", "critic": False}, env.observation_space, env.action_space)
    collector = EpisodeCollector(env, actor, group_size=2, device=torch.device("cpu"), seed=1)
    rollout = collector.collect()
    assert rollout.shape == (4, 7) and rollout[MASK].all()
    assert collector.finished_episodes()["truncated"].all()
