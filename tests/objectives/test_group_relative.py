"""GroupRelativeEstimator against hand-computed advantages and a slow per-group loop (``statistics`` module)."""

import math
import statistics

import pytest
import torch
from tensordict import TensorDict

from rlexp.objectives.value import GroupRelativeEstimator
from rlexp.registry import ConfigError, value_estimators

PAD = 100.0  # garbage reward in padded slots: it must never count


def rollout(rewards, ends, truncated=(), mask=True):
    """[N, T] rollout from per-row reward lists; row i ends at step ``ends[i]`` (None: it does not end)."""
    steps = max(len(r) for r in rewards)
    n = len(rewards)
    reward = torch.full((n, steps, 1), PAD)
    valid = torch.zeros(n, steps, dtype=torch.bool)
    done = torch.zeros(n, steps, 1, dtype=torch.bool)
    trunc = torch.zeros(n, steps, 1, dtype=torch.bool)
    for i, row in enumerate(rewards):
        reward[i, : len(row), 0] = torch.tensor(row, dtype=torch.float32)
        valid[i, : len(row)] = True
        if ends[i] is not None:
            done[i, ends[i]] = True
            trunc[i, ends[i]] = i in truncated
    td = TensorDict({"next": {"reward": reward, "done": done, "truncated": trunc}}, [n, steps])
    if mask:
        td["collector", "mask"] = valid
    return td


def outcome_example():
    # group 0: returns 3, 2, 4 (row 2 hits the time limit); group 1: returns all 2
    return rollout([[1, 1, 1], [1, 1], [1, 1, 1, 1], [2, 0], [1, 1], [0, 0, 2]],
                   ends=[2, 1, 3, 1, 1, 2], truncated={2})


def test_outcome_advantages_by_hand():
    td = outcome_example()
    out = GroupRelativeEstimator(group_size=3)(td)
    assert out is td
    adv = td["advantage"]
    assert adv.shape == (6, 4, 1) and adv.dtype == torch.float32
    scale = 1 / (1 + 1e-6)  # unbiased std of (3, 2, 4) is 1; eps is added
    expected = torch.tensor([[0, 0, 0, 0], [-scale, -scale, 0, 0], [scale] * 4,
                             [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]).unsqueeze(-1)
    torch.testing.assert_close(adv, expected)


def test_biased_std_additive_eps_and_gamma():
    td = outcome_example()
    GroupRelativeEstimator(group_size=3, std="biased", eps=0.0)(td)
    s = math.sqrt(2 / 3)
    torch.testing.assert_close(td["advantage"][:3, 0, 0], torch.tensor([0, -1 / s, 1 / s]))
    td = rollout([[0.0], [2.0]], ends=[0, 0])
    GroupRelativeEstimator(group_size=2, eps=1.0)(td)  # unbiased std sqrt(2); (R - 1) / (sqrt(2) + 1)
    torch.testing.assert_close(td["advantage"][:, 0, 0], torch.tensor([-1, 1]) / (math.sqrt(2) + 1))
    td = outcome_example()
    GroupRelativeEstimator(group_size=3, gamma=0.5, eps=0.0)(td)
    returns = [1 + 0.5 + 0.25, 1 + 0.5, 1 + 0.5 + 0.25 + 0.125]
    mean, std = statistics.mean(returns), statistics.stdev(returns)
    torch.testing.assert_close(td["advantage"][:3, 0, 0], torch.tensor([(r - mean) / std for r in returns]))


def test_process_advantages_by_hand():
    # reward-to-go: a = (6, 5, 3), b = (1, 1), c = (2,)
    td = rollout([[1, 2, 3], [0, 1], [2]], ends=[2, 1, 0])
    GroupRelativeEstimator(group_size=3, mode="process", eps=0.0)(td)
    r7, r8 = math.sqrt(7), math.sqrt(8)  # unbiased std at t=0 over (6, 1, 2) and at t=1 over (5, 1)
    expected = torch.tensor([[3 / r7, 2 / r8, 0], [-2 / r7, -2 / r8, 0], [-1 / r7, 0, 0]])
    torch.testing.assert_close(td["advantage"].squeeze(-1), expected)


def test_equal_returns_give_exactly_zero_and_are_counted():
    td = rollout([[0.1, 0.7, 0.1], [0.7, 0.1, 0.1], [0.1, 0.1, 0.7], [0.0], [0.0], [3.0]], ends=[2, 2, 2, 0, 0, 0])
    estimator = GroupRelativeEstimator(group_size=3)
    estimator(td)
    assert (td["advantage"][:3] == 0).all()
    assert (td["advantage"][3:, 0] != 0).all()
    stats = estimator.group_statistics(td)
    assert stats["equal_return_group_fraction"] == pytest.approx(0.5)


def test_group_statistics_by_hand():
    td = outcome_example()
    td["collector", "mask"][5, 2] = True
    td["next", "done"][5] = False  # row 5 never ends: counted with the truncated ones
    stats = GroupRelativeEstimator(group_size=3).group_statistics(td)
    assert stats == pytest.approx({"group_return_mean": 15 / 6, "group_return_std": (1 + 0) / 2,
                                   "equal_return_group_fraction": 0.5, "truncated_fraction": 2 / 6})


def test_mask_defaults_to_the_steps_up_to_the_first_done():
    with_mask = outcome_example()
    without = with_mask.exclude(("collector", "mask"))
    for mode in ("outcome", "process"):
        estimator = GroupRelativeEstimator(group_size=3, mode=mode)
        torch.testing.assert_close(estimator(with_mask.clone())["advantage"], estimator(without.clone())["advantage"])


def slow_advantages(rewards, group_size, mode, gamma, eps, unbiased):
    """Per group and per step with Python floats; rows are lists of rewards (their valid steps)."""
    std = statistics.stdev if unbiased else statistics.pstdev

    def standardise(values):
        if not values or max(values) - min(values) <= 1e-5 * max(abs(v) for v in values):  # equal up to rounding
            return [0.0] * len(values)
        m, s = statistics.mean(values), std(values)
        return [(v - m) / (s + eps) for v in values]

    steps = max(len(r) for r in rewards)
    out = [[0.0] * steps for _ in rewards]
    for start in range(0, len(rewards), group_size):
        rows = range(start, start + group_size)
        to_go = {i: [sum(gamma ** (k - t) * rewards[i][k] for k in range(t, len(rewards[i])))
                     for t in range(len(rewards[i]))] for i in rows}
        if mode == "outcome":
            for i, a in zip(rows, standardise([to_go[i][0] for i in rows])):
                out[i][: len(rewards[i])] = [a] * len(rewards[i])
        else:
            for t in range(steps):
                alive = [i for i in rows if t < len(rewards[i])]
                for i, a in zip(alive, standardise([to_go[i][t] for i in alive])):
                    out[i][t] = a
    return torch.tensor(out)


@pytest.mark.parametrize("mode", ["outcome", "process"])
@pytest.mark.parametrize("unbiased", [True, False])
def test_matches_a_slow_per_group_loop(mode, unbiased):
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 9, (12,), generator=gen).tolist()
    rewards = [torch.randint(-2, 3, (n,), generator=gen).float().tolist() for n in lengths]
    rewards[4:8] = [[1.0] * 3] * 4  # one group with equal returns
    td = rollout(rewards, ends=[n - 1 for n in lengths])
    kwargs = {"mode": mode, "gamma": 0.9, "eps": 1e-3, "std": "unbiased" if unbiased else "biased"}
    GroupRelativeEstimator(group_size=4, **kwargs)(td)
    expected = slow_advantages(rewards, 4, mode, 0.9, 1e-3, unbiased)
    torch.testing.assert_close(td["advantage"].squeeze(-1), expected, rtol=1e-5, atol=1e-5)


def test_keys_registry_and_errors():
    estimator = value_estimators.build({"name": "group_relative", "group_size": 2, "mode": "process"},
                                       value_network=None)
    assert isinstance(estimator, GroupRelativeEstimator) and estimator.mode == "process"
    assert estimator.out_keys == ["advantage"] and ("collector", "mask") in estimator.in_keys
    estimator.set_keys(advantage="adv", mask="valid")
    td = rollout([[1.0], [0.0]], ends=[0, 0], mask=False)
    td["valid"] = torch.ones(2, 1, dtype=torch.bool)
    assert "adv" in estimator(td).keys()
    with pytest.raises(KeyError):
        estimator.set_keys(value="v")
    with pytest.raises(ConfigError, match="group_sise"):
        value_estimators.build({"name": "group_relative", "group_sise": 2}, value_network=None)
    with pytest.raises(ConfigError, match="critic"):
        GroupRelativeEstimator(group_size=2, value_network=torch.nn.Linear(1, 1))
    for bad in ({"group_size": 1}, {"group_size": 2, "mode": "step"}, {"group_size": 2, "std": "mad"}):
        with pytest.raises(ValueError):
            GroupRelativeEstimator(**bad)
    with pytest.raises(ValueError, match="groups"):
        GroupRelativeEstimator(group_size=4)(outcome_example())
    with pytest.raises(ValueError, match="num_envs, T"):
        GroupRelativeEstimator(group_size=3)(outcome_example()[:, 0])
    two_episodes = outcome_example()
    two_episodes["collector", "mask"][1] = True  # steps after row 1's done marked valid
    with pytest.raises(ValueError, match="one episode"):
        GroupRelativeEstimator(group_size=3)(two_episodes)
