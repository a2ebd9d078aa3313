"""Advantage and return estimates on plain tensors (torchrl's ``objectives.value.functional``).

Tensors are ``[*B, T, F]`` with time at ``time_dim`` (default -2, counted in tensor dims); a 1-D
``[T]`` tensor needs ``time_dim=-1``. ``done`` ends a trajectory (no propagation across it),
``terminated`` also cuts the bootstrap (the next value counts as 0); ``terminated=None`` means
``done``. ``gamma``/``lmbda`` are floats, one-element tensors or per-step tensors shaped like ``done``.
"""

from __future__ import annotations

import functools
import warnings

import torch

from rlexp.objectives.value.scan import reverse_linear_scan

__all__ = [
    "generalized_advantage_estimate",
    "td0_return_estimate",
    "td1_return_estimate",
    "td_lambda_return_estimate",
]

SHAPE_ERR = "All input tensors (value, reward and done states) must share a unique shape."
TIME_DIM_ERR = "The tensor shape and the time dimension are not compatible: got {} and time_dim={}."


def _swap_time(tensor, time_dim: int):
    """Move the time axis to -2 (a swap, so applying it twice restores the layout)."""
    if not isinstance(tensor, torch.Tensor) or tensor.numel() <= 1:
        return tensor
    dim = time_dim - tensor.ndim if time_dim >= 0 else time_dim
    if not -tensor.ndim <= dim < 0:
        raise RuntimeError(TIME_DIM_ERR.format(tensor.shape, dim))
    if tensor.ndim >= 2:
        return tensor.transpose(dim, -2)
    if dim == -1:
        return tensor.unsqueeze(-1)
    raise RuntimeError(TIME_DIM_ERR.format(tensor.shape, dim))


def _time_at_minus_two(fn):
    """Let ``fn`` (written for time at -2) accept any ``time_dim``."""

    @functools.wraps(fn)
    def wrapper(*args, time_dim: int = -2, **kwargs):
        if time_dim == -2:
            for a in (*args, *kwargs.values()):
                if isinstance(a, torch.Tensor) and a.numel() > 1 and a.ndim < 2:
                    raise RuntimeError(TIME_DIM_ERR.format(a.shape, time_dim) + " Pass time_dim=-1 for [T] tensors.")
            return fn(*args, **kwargs)
        one_dim = any(isinstance(a, torch.Tensor) and a.ndim == 1 and a.numel() > 1
                      for a in (*args, *kwargs.values()))
        args = [_swap_time(a, time_dim) for a in args]
        kwargs = {k: _swap_time(v, time_dim) for k, v in kwargs.items()}
        out = fn(*args, **kwargs)

        def back(tensor):
            return tensor.squeeze(-1) if one_dim else _swap_time(tensor, time_dim)

        return tuple(back(o) for o in out) if isinstance(out, tuple) else back(out)

    return wrapper


def _check_shapes(*tensors: torch.Tensor) -> None:
    shape = tensors[0].shape
    if any(t.shape != shape for t in tensors[1:]):
        raise RuntimeError(SHAPE_ERR)


def _is_per_step(value, like: torch.Tensor) -> bool:
    return isinstance(value, torch.Tensor) and value.shape == like.shape


def _as_factor(value, like: torch.Tensor):
    """A scalar gamma/lambda as a broadcastable tensor on ``like``'s device and dtype."""
    if isinstance(value, torch.Tensor):
        if value.shape == like.shape:
            return value.to(like.dtype)
        return value.to(device=like.device, dtype=like.dtype).reshape(())
    return value


def _float(flag: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return flag.to(like.dtype)


@_time_at_minus_two
def generalized_advantage_estimate(gamma, lmbda, state_value, next_state_value, reward, done, terminated=None):
    """GAE: ``A_t = delta_t + gamma_t lmbda (1 - done_t) A_{t+1}``; returns ``(advantage, value_target)``."""
    terminated = done if terminated is None else terminated
    _check_shapes(state_value, next_state_value, reward, done, terminated)
    gamma, lmbda = _as_factor(gamma, reward), _as_factor(lmbda, reward)
    not_terminated = _float(~terminated, reward)
    delta = reward + gamma * not_terminated * next_state_value - state_value
    decay = (gamma * lmbda) * _float(~done, reward)
    advantage = reverse_linear_scan(delta, decay.expand_as(delta))
    return advantage, advantage + state_value


def td0_return_estimate(gamma, next_state_value, reward, terminated=None, *, done=None):
    """One-step bootstrapped return ``r + gamma (1 - terminated) V'``."""
    if terminated is None:
        if done is None:
            raise TypeError("td0_return_estimate needs `terminated` (or the deprecated `done`).")
        warnings.warn("`done` in td0_return_estimate is deprecated; pass `terminated` instead.",
                      DeprecationWarning, stacklevel=2)
        terminated = done
    _check_shapes(next_state_value, reward, terminated)
    return reward + _as_factor(gamma, reward) * _float(~terminated, reward) * next_state_value


def _lambda_return(gamma, lmbda, next_state_value, reward, done, terminated):
    """Rolling TD(lambda) return (time at -2), seeded by the last masked next value."""
    next_value = _float(~terminated, reward) * next_state_value
    done_f = _float(done, reward)
    x = reward + gamma * next_value * ((1 - lmbda) + lmbda * done_f)
    decay = (gamma * lmbda) * (1 - done_f)
    return reverse_linear_scan(x, decay.expand_as(x), init=next_value[..., -1, :])


def _per_start(kernel, gamma, lmbda, next_state_value, reward, done, terminated):
    """Non-rolling gamma: the return starting at step k uses ``gamma_k``/``lmbda_k`` throughout."""

    def starts(value):
        if _is_per_step(value, reward):
            return value.movedim(-2, 0).unsqueeze(-2)  # [T_start, *B, 1, F]
        return value

    out = kernel(starts(gamma), starts(lmbda), next_state_value, reward, done, terminated)
    return out.diagonal(dim1=0, dim2=-2).movedim(-1, -2)


def _check_rolling(rolling_gamma, gamma, lmbda, like) -> bool:
    if rolling_gamma is None or rolling_gamma:
        return True
    if not (_is_per_step(gamma, like) or _is_per_step(lmbda, like)):
        raise RuntimeError("rolling_gamma=False is expected only with time-sensitive gamma or lambda values.")
    return False


def _td1_no_bootstrap(gamma, lmbda, next_state_value, reward, done, terminated):
    """TD(1) recursion from 0 at the window end (torchrl's non-rolling quirk)."""
    not_terminated = _float(~terminated, reward)
    truncated = _float(done & ~terminated, reward)
    g = gamma * not_terminated
    x, decay = torch.broadcast_tensors(reward + g * truncated * next_state_value, g * (1 - truncated))
    return reverse_linear_scan(x, decay)


@_time_at_minus_two
def td1_return_estimate(gamma, next_state_value, reward, done, terminated=None, rolling_gamma=None):
    """TD(1): discounted reward sum, bootstrapped at truncations and at the window end."""
    terminated = done if terminated is None else terminated
    _check_shapes(next_state_value, reward, done, terminated)
    gamma = _as_factor(gamma, reward)
    if _check_rolling(rolling_gamma, gamma, None, reward):
        return _lambda_return(gamma, 1.0, next_state_value, reward, done, terminated)
    return _per_start(_td1_no_bootstrap, gamma, 1.0, next_state_value, reward, done, terminated)


@_time_at_minus_two
def td_lambda_return_estimate(gamma, lmbda, next_state_value, reward, done, terminated=None, rolling_gamma=None):
    """TD(lambda) return ``G_t = r_t + gamma_t((1 - lmbda) V'_t + lmbda g)``, ``g = V'_t`` if done else ``G_{t+1}``."""
    terminated = done if terminated is None else terminated
    _check_shapes(next_state_value, reward, done, terminated)
    gamma, lmbda = _as_factor(gamma, reward), _as_factor(lmbda, reward)
    if _check_rolling(rolling_gamma, gamma, lmbda, reward):
        return _lambda_return(gamma, lmbda, next_state_value, reward, done, terminated)
    return _per_start(_lambda_return, gamma, lmbda, next_state_value, reward, done, terminated)
