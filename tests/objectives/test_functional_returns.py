"""The functional return estimates against loop references and hand-computed numbers."""

import pytest
import torch

from rlexp.objectives.value.functional import (
    generalized_advantage_estimate,
    td0_return_estimate,
    td1_return_estimate,
    td_lambda_return_estimate,
)
from rlexp.objectives.value.scan import reverse_linear_scan

TOL = {"rtol": 1e-4, "atol": 1e-5}


def test_gae_hand_computed_truncation_and_termination():
    # gamma=0.5, lambda=0.5; step 1 is truncated (bootstraps, cuts the trace), step 3 terminated.
    r = torch.tensor([1.0, 2.0, 0.0, 4.0]).view(4, 1)
    v = torch.tensor([0.5, 1.0, 2.0, 1.0]).view(4, 1)
    nv = torch.tensor([1.0, 8.0, 1.0, 9.0]).view(4, 1)
    done = torch.tensor([False, True, False, True]).view(4, 1)
    term = torch.tensor([False, False, False, True]).view(4, 1)
    adv, target = generalized_advantage_estimate(0.5, 0.5, v, nv, r, done, term)
    delta = [1 + 0.5 * 1 - 0.5, 2 + 0.5 * 8 - 1, 0 + 0.5 * 1 - 2, 4 - 1]  # 1, 5, -1.5, 3
    a3 = delta[3]
    a2 = delta[2] + 0.25 * a3  # -0.75
    a1 = delta[1]  # trace cut by done
    a0 = delta[0] + 0.25 * a1  # 2.25
    torch.testing.assert_close(adv.view(-1), torch.tensor([a0, a1, a2, a3]))
    torch.testing.assert_close(target, adv + v)


@pytest.mark.parametrize("batch", [(), (3,), (2, 3)])
@pytest.mark.parametrize("features", [1, 2])
def test_gae_matches_loop(ref, batch, features):
    value, next_value, reward, done, terminated = ref.rollout(*batch, steps=37, features=features)
    adv, target = generalized_advantage_estimate(0.97, 0.9, value, next_value, reward, done, terminated)
    exp_adv, exp_target = ref.gae(0.97, 0.9, value, next_value, reward, done, terminated)
    torch.testing.assert_close(adv, exp_adv, **TOL)
    torch.testing.assert_close(target, exp_target, **TOL)


def test_gae_long_window_and_per_step_gamma(ref):
    value, next_value, reward, done, terminated = ref.rollout(4, steps=400, p_done=0.01)
    gamma = 0.99 ** torch.randint(1, 4, reward.shape).float()
    adv, _ = generalized_advantage_estimate(gamma, 0.95, value, next_value, reward, done, terminated)
    torch.testing.assert_close(adv, ref.gae(gamma, 0.95, value, next_value, reward, done, terminated)[0], **TOL)


def test_gae_terminated_defaults_to_done(ref):
    value, next_value, reward, done, _ = ref.rollout(2, steps=9)
    adv, _ = generalized_advantage_estimate(0.9, 0.8, value, next_value, reward, done)
    torch.testing.assert_close(adv, ref.gae(0.9, 0.8, value, next_value, reward, done, done)[0], **TOL)


def test_time_dim_moves_axis_and_accepts_1d(ref):
    value, next_value, reward, done, terminated = ref.rollout(3, steps=10)
    expected = ref.gae(0.9, 0.7, value, next_value, reward, done, terminated)[0]
    moved = [x.transpose(0, 1) for x in (value, next_value, reward, done, terminated)]  # [T, B, 1]
    adv, _ = generalized_advantage_estimate(0.9, 0.7, *moved, time_dim=0)
    torch.testing.assert_close(adv, expected.transpose(0, 1), **TOL)
    flat = [x[0, :, 0] for x in (value, next_value, reward, done, terminated)]  # [T]
    adv1, target1 = generalized_advantage_estimate(0.9, 0.7, *flat, time_dim=-1)
    assert adv1.shape == (10,)
    torch.testing.assert_close(adv1, expected[0, :, 0], **TOL)
    with pytest.raises(RuntimeError, match=r"The tensor shape and the time dimension are not compatible: got "
                                           r"torch.Size\(\[10\]\) and time_dim=-2. Pass time_dim=-1"):
        generalized_advantage_estimate(0.9, 0.7, *flat)  # a [T] tensor needs time_dim=-1
    with pytest.raises(RuntimeError, match=r"not compatible: got torch.Size\(\[3, 10, 1\]\) and time_dim=-4"):
        generalized_advantage_estimate(0.9, 0.7, value, next_value, reward, done, terminated, time_dim=-4)


def test_shape_mismatch_raises(ref):
    value, next_value, reward, done, terminated = ref.rollout(2, steps=5)
    with pytest.raises(RuntimeError, match=r"All input tensors \(value, reward and done states\) must share a unique"):
        generalized_advantage_estimate(0.9, 0.9, value, next_value[:1], reward, done, terminated)
    with pytest.raises(RuntimeError, match="must share a unique shape"):
        td_lambda_return_estimate(0.9, 0.9, next_value, reward[..., :3, :], done, terminated)


def test_td0(ref):
    _, next_value, reward, done, terminated = ref.rollout(3, steps=6)
    out = td0_return_estimate(0.9, next_value, reward, terminated)
    torch.testing.assert_close(out, ref.td0(0.9, next_value, reward, terminated))
    with pytest.warns(DeprecationWarning):
        deprecated = td0_return_estimate(0.9, next_value, reward, done=terminated)
    torch.testing.assert_close(deprecated, out)


@pytest.mark.parametrize("per_step_gamma", [False, True])
def test_td_lambda_and_td1_match_loops(ref, per_step_gamma):
    _, next_value, reward, done, terminated = ref.rollout(2, 3, steps=23)
    gamma = 0.95 ** torch.randint(1, 3, reward.shape).float() if per_step_gamma else 0.95
    out = td_lambda_return_estimate(gamma, 0.8, next_value, reward, done, terminated)
    torch.testing.assert_close(out, ref.td_lambda(gamma, 0.8, next_value, reward, done, terminated), **TOL)
    out1 = td1_return_estimate(gamma, next_value, reward, done, terminated)
    torch.testing.assert_close(out1, ref.td1(gamma, next_value, reward, done, terminated), **TOL)


def test_td1_hand_computed():
    # gamma=0.5: step 2 truncated -> r + g V'; step 4 terminated -> r; last step bootstraps from V'.
    r = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 2.0]).view(6, 1)
    nv = torch.tensor([10.0, 10.0, 6.0, 10.0, 10.0, 4.0]).view(6, 1)
    done = torch.tensor([0, 0, 1, 0, 1, 0], dtype=torch.bool).view(6, 1)
    term = torch.tensor([0, 0, 0, 0, 1, 0], dtype=torch.bool).view(6, 1)
    out = td1_return_estimate(0.5, nv, r, done, term).view(-1)
    g5 = 2 + 0.5 * 4
    g4 = 1.0
    g3 = 1 + 0.5 * g4
    g2 = 1 + 0.5 * 6
    g1 = 1 + 0.5 * g2
    g0 = 1 + 0.5 * g1
    torch.testing.assert_close(out, torch.tensor([g0, g1, g2, g3, g4, g5]))


def test_td_lambda_per_step_lambda(ref):
    _, next_value, reward, done, terminated = ref.rollout(2, steps=15)
    lmbda = torch.rand(reward.shape, generator=torch.Generator().manual_seed(3))
    out = td_lambda_return_estimate(0.9, lmbda, next_value, reward, done, terminated)
    torch.testing.assert_close(out, ref.td_lambda(0.9, lmbda, next_value, reward, done, terminated), **TOL)


def test_non_rolling_gamma(ref):
    _, next_value, reward, done, terminated = ref.rollout(2, steps=11)
    gamma = torch.rand(reward.shape, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.5
    out = td_lambda_return_estimate(gamma, 0.7, next_value, reward, done, terminated, rolling_gamma=False)
    expected = ref.non_rolling(ref.td_lambda, gamma, next_value, reward, done, terminated, lmbda=0.7)
    torch.testing.assert_close(out, expected, **TOL)
    out1 = td1_return_estimate(gamma, next_value, reward, done, terminated, rolling_gamma=False)
    expected1 = ref.non_rolling(ref.td1_no_bootstrap, gamma, next_value, reward, done, terminated)
    torch.testing.assert_close(out1, expected1, **TOL)
    with pytest.raises(RuntimeError):
        td_lambda_return_estimate(0.9, 0.7, next_value, reward, done, terminated, rolling_gamma=False)
    with pytest.raises(RuntimeError):
        td1_return_estimate(0.9, next_value, reward, done, terminated, rolling_gamma=False)


def test_scan_matches_recurrence_with_init_and_gradients():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 17, 2, generator=gen, requires_grad=True)
    c = torch.rand(3, 17, 2, generator=gen) * (torch.rand(3, 17, 2, generator=gen) > 0.2)
    init = torch.randn(3, 2, generator=gen)
    out = reverse_linear_scan(x, c, init)
    expected = torch.zeros_like(out)
    following = init
    for t in reversed(range(17)):
        following = x[:, t] + c[:, t] * following
        expected[:, t] = following
    torch.testing.assert_close(out, expected, **TOL)
    (grad,) = torch.autograd.grad(out.sum(), x)
    (expected_grad,) = torch.autograd.grad(expected.sum(), x)
    torch.testing.assert_close(grad, expected_grad, **TOL)
