"""Action distributions for continuous control, with a ``deterministic_sample`` for evaluation.

``IndependentNormal`` has a closed-form entropy; ``TanhNormal`` squashes into ``[low, high]`` and has
none, so PPO-family losses estimate its entropy by Monte Carlo (``samples_mc_entropy``).
"""

from __future__ import annotations

import torch
from torch import distributions as D


class IndependentNormal(D.Independent):
    """Diagonal Gaussian over the last ``event_dims`` dimensions."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, event_dims: int = 1):
        super().__init__(D.Normal(loc, scale), event_dims)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.base_dist.loc


class _ClampedTanh(D.TanhTransform):
    """tanh whose inverse clamps inside (-1, 1), so stored boundary actions have finite log-probs."""

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        eps = torch.finfo(y.dtype).eps
        return super()._inverse(y.clamp(-1 + eps, 1 - eps))


class TanhNormal(D.TransformedDistribution):
    """Gaussian squashed by tanh and rescaled affinely from ``(-1, 1)`` to ``(low, high)``."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, low: float | torch.Tensor = -1.0,
                 high: float | torch.Tensor = 1.0, event_dims: int = 1):
        low = torch.as_tensor(low, dtype=loc.dtype, device=loc.device)
        high = torch.as_tensor(high, dtype=loc.dtype, device=loc.device)
        transforms = [_ClampedTanh(), D.AffineTransform((high + low) / 2, (high - low) / 2, event_dim=1)]
        super().__init__(IndependentNormal(loc, scale, event_dims), transforms)
        self.low, self.high = low, high

    @property
    def deterministic_sample(self) -> torch.Tensor:
        loc = self.base_dist.base_dist.loc
        return (self.high + self.low) / 2 + (self.high - self.low) / 2 * torch.tanh(loc)
