"""Slow, loop-over-time reference returns written straight from the spec (section 3).

Tensors are ``[*B, T, F]`` with time at -2; flags are bool. Tests get them through the ``ref``
fixture as the independent implementation the vectorised kernels must match.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch


def _at(x, t):
    return x[..., t, :]


def _gamma_at(gamma, like, t):
    if isinstance(gamma, torch.Tensor) and gamma.shape == like.shape:
        return _at(gamma, t)
    return gamma


def gae_loop(gamma, lmbda, value, next_value, reward, done, terminated):
    """``delta_t = r + g (1-k) V' - V``; ``A_t = delta_t + g lmbda (1-d) A_{t+1}``."""
    steps = reward.shape[-2]
    adv = torch.zeros_like(reward)
    running = torch.zeros_like(_at(reward, 0))
    for t in reversed(range(steps)):
        g = _gamma_at(gamma, reward, t)
        d, k = _at(done, t).float(), _at(terminated, t).float()
        delta = _at(reward, t) + g * (1 - k) * _at(next_value, t) - _at(value, t)
        running = delta + g * lmbda * (1 - d) * running
        adv[..., t, :] = running
    return adv, adv + value


def td_lambda_loop(gamma, lmbda, next_value, reward, done, terminated):
    """``G_t = r_t + g((1-lmbda) V~'_t + lmbda * (V~'_t if done_t else G_{t+1}))``, seeded by ``V~'_{T-1}``."""
    steps = reward.shape[-2]
    masked = next_value * (~terminated).float()
    out = torch.zeros_like(reward)
    following = _at(masked, steps - 1)
    for t in reversed(range(steps)):
        g = _gamma_at(gamma, reward, t)
        lam = _gamma_at(lmbda, reward, t)
        d = _at(done, t).float()
        boot = d * _at(masked, t) + (1 - d) * following
        following = _at(reward, t) + g * ((1 - lam) * _at(masked, t) + lam * boot)
        out[..., t, :] = following
    return out


def td1_loop(gamma, next_value, reward, done, terminated):
    """Terminated -> ``r``; truncated -> ``r + g V'``; otherwise ``r + g G_{t+1}``; ``G_T := V'_{T-1}``."""
    steps = reward.shape[-2]
    out = torch.zeros_like(reward)
    following = _at(next_value, steps - 1)
    for t in reversed(range(steps)):
        g = _gamma_at(gamma, reward, t)
        k = _at(terminated, t)
        truncated = _at(done, t) & ~k
        following = torch.where(k, _at(reward, t),
                                torch.where(truncated, _at(reward, t) + g * _at(next_value, t),
                                            _at(reward, t) + g * following))
        out[..., t, :] = following
    return out


def td0_reference(gamma, next_value, reward, terminated):
    return reward + gamma * (~terminated).float() * next_value


def non_rolling(loop, gamma, *args, lmbda=None, **kwargs):
    """Return at each start k computed with ``gamma_k`` (and ``lmbda_k``) for its whole window."""
    steps = args[-1].shape[-2]
    pieces = []
    for k in range(steps):
        gk = gamma[..., k:k + 1, :].expand_as(gamma)
        if lmbda is None:
            full = loop(gk, *args, **kwargs)
        else:
            lk = lmbda[..., k:k + 1, :].expand_as(lmbda) if isinstance(lmbda, torch.Tensor) and lmbda.ndim > 0 else lmbda
            full = loop(gk, lk, *args, **kwargs)
        pieces.append(full[..., k:k + 1, :])
    return torch.cat(pieces, -2)


def td1_no_bootstrap_loop(gamma, next_value, reward, done, terminated):
    """TD(1) recursion seeded by 0 at the window end (non-rolling quirk, spec 3.6)."""
    steps = reward.shape[-2]
    out = torch.zeros_like(reward)
    following = torch.zeros_like(_at(reward, 0))
    for t in reversed(range(steps)):
        g = _gamma_at(gamma, reward, t)
        k = _at(terminated, t).float()
        u = (_at(done, t) & ~_at(terminated, t)).float()
        following = _at(reward, t) + g * (1 - k) * ((1 - u) * following + u * _at(next_value, t))
        out[..., t, :] = following
    return out


def random_rollout(*batch, steps=12, features=1, p_done=0.2, p_terminated=0.5, seed=0):
    """Random ``(value, next_value, reward, done, terminated)`` with ``terminated`` a subset of ``done``."""
    gen = torch.Generator().manual_seed(seed)
    shape = (*batch, steps, features)
    value = torch.randn(shape, generator=gen)
    next_value = torch.randn(shape, generator=gen)
    reward = torch.randn(shape, generator=gen)
    done = torch.rand(shape, generator=gen) < p_done
    terminated = done & (torch.rand(shape, generator=gen) < p_terminated)
    return value, next_value, reward, done, terminated


@pytest.fixture
def ref():
    """The reference implementations above."""
    return SimpleNamespace(gae=gae_loop, td_lambda=td_lambda_loop, td1=td1_loop, td0=td0_reference,
                           non_rolling=non_rolling, td1_no_bootstrap=td1_no_bootstrap_loop, rollout=random_rollout)
