"""Critic regression terms of actor-critic losses: distances, value clipping, explained variance."""

from __future__ import annotations

import torch
from torch.nn import functional as F

CRITIC_LOSS_TYPES = ("l1", "l2", "smooth_l1")


def distance_loss(x: torch.Tensor, y: torch.Tensor, loss_type: str) -> torch.Tensor:
    """Elementwise ``|x-y|`` (l1), ``(x-y)^2`` (l2, no 1/2) or Huber with beta 1 (smooth_l1)."""
    if x.shape != y.shape:
        raise RuntimeError(f"The critic target and prediction shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}.")
    if loss_type == "l2":
        return F.mse_loss(x, y, reduction="none")
    if loss_type == "l1":
        return F.l1_loss(x, y, reduction="none")
    if loss_type == "smooth_l1":
        return F.smooth_l1_loss(x, y, reduction="none")
    raise NotImplementedError(f"Unknown critic loss type {loss_type!r}; choose one of {', '.join(CRITIC_LOSS_TYPES)}.")


def clipped_value_loss(target: torch.Tensor, value: torch.Tensor, old_value: torch.Tensor, clip: float | torch.Tensor,
                       loss_type: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``max(d(target, v), d(target, v_old + clamp(v - v_old, -c, c)))`` and the fraction clipped."""
    delta = value - old_value
    clipped = delta.clamp(-clip, clip)
    loss = torch.maximum(distance_loss(target, value, loss_type),
                         distance_loss(target, old_value + clipped, loss_type))
    return loss, (delta != clipped).float().mean().detach()


def explained_variance(target: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``1 - Var0(target - v) / (Var0(target) + eps)`` with biased variances along dim 0."""
    with torch.no_grad():
        eps = torch.finfo(target.dtype).eps
        return 1 - (target - value).var(0, correction=0) / (target.var(0, correction=0) + eps)
