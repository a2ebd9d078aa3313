"""Advantage preparation in policy-gradient losses: standardisation and broadcasting to log-weights."""

from __future__ import annotations

import torch

ADV_STD_MIN = torch.finfo(torch.float32).resolution  # 1e-6, a clamp on the std (not an additive eps)


def normalize_advantage(advantage: torch.Tensor, exclude_dims=(), valid: torch.Tensor | None = None) -> torch.Tensor:
    """``(A - mean) / max(unbiased std, 1e-6)``, over all dims except ``exclude_dims``.

    With a ``valid`` mask (``"shifted_valid"``), only valid entries count and the std is the
    biased one, clamped at 1e-4.
    """
    excluded = {d % advantage.ndim for d in exclude_dims}
    dims = [d for d in range(advantage.ndim) if d not in excluded]
    if valid is not None:
        valid = valid.reshape(*valid.shape, *([1] * (advantage.ndim - valid.ndim))).expand_as(advantage)
        weight = valid.to(advantage.dtype)
        count = weight.sum(dims, keepdim=True).clamp_min(1)
        mean = (advantage * weight).sum(dims, keepdim=True) / count
        var = ((advantage - mean) ** 2 * weight).sum(dims, keepdim=True) / count
        return (advantage - mean) / var.sqrt().clamp_min(1e-4)
    if not exclude_dims:
        return (advantage - advantage.mean()) / advantage.std().clamp_min(ADV_STD_MIN)
    mean = advantage.mean(dims, keepdim=True)
    std = advantage.std(dims, keepdim=True).clamp_min(ADV_STD_MIN)
    return (advantage - mean) / std


def broadcast_advantage(advantage: torch.Tensor, log_weight: torch.Tensor) -> torch.Tensor:
    """Expand ``[*B, 1]`` advantages over extra log-prob dims (e.g. per-action-dim log-probs).

    Raises ``ValueError`` when broadcasting would create a larger tensor than both inputs,
    typically an advantage missing its trailing singleton dimension.
    """
    if log_weight.ndim > advantage.ndim and advantage.shape[-1] == 1:
        batch = advantage.shape[:-1]
        if log_weight.shape[: len(batch)] == batch:
            advantage = advantage.reshape(*batch, *([1] * (log_weight.ndim - len(batch)))).expand_as(log_weight)
    shape = torch.broadcast_shapes(advantage.shape, log_weight.shape)
    if shape.numel() > max(advantage.numel(), log_weight.numel()):
        raise ValueError(f"The advantage of shape {tuple(advantage.shape)} does not match the log-weight of shape "
                         f"{tuple(log_weight.shape)}; a missing trailing singleton dimension is the usual cause.")
    return advantage
