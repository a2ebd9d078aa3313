"""Action distributions beyond torch's Categorical, with a ``deterministic_sample`` for evaluation.

``IndependentNormal`` has a closed-form entropy; ``TanhNormal`` squashes into ``[low, high]`` and has
none, so PPO-family losses estimate its entropy by Monte Carlo (``samples_mc_entropy``).
``MultiCategorical`` is one categorical per dimension of a ``MultiDiscrete`` action space.
"""

from __future__ import annotations

import torch
from torch import distributions as D
from torch._C._functorch import is_batchedtensor


def standard_normal(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    """N(0, 1) draws of ``shape`` in ``like``'s dtype and device: in place, as torch's Normal draws them, or
    out of place under ``torch.func.vmap`` (several seeds in one process), which vmap batches with a
    different draw per seed (the in-place draw is refused there)."""
    if is_batchedtensor(like):
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    return torch.empty(shape, dtype=like.dtype, device=like.device).normal_()


class _Normal(D.Normal):
    """torch's Normal, drawing through ``standard_normal`` so that it also samples under vmap."""

    def rsample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return self.loc + standard_normal(self._extended_shape(sample_shape), self.loc) * self.scale

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        if not is_batchedtensor(self.loc):
            return super().sample(sample_shape)
        with torch.no_grad():
            return self.rsample(sample_shape)


class IndependentNormal(D.Independent):
    """Diagonal Gaussian over the last ``event_dims`` dimensions."""

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, event_dims: int = 1):
        super().__init__(_Normal(loc, scale), event_dims)

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


class MultiCategorical(D.Distribution):
    """Independent categoricals over ``nvec[i]`` choices each: an action is ``[*batch, len(nvec)]``.

    ``logits`` ``[*batch, sum(nvec)]`` are split head by head; the log-prob and the entropy are the
    sums of the heads' (the heads are independent), and the KL to another ``MultiCategorical`` is
    the sum of the heads' KLs.
    """

    arg_constraints: dict = {}

    def __init__(self, logits: torch.Tensor, nvec: tuple[int, ...] | list[int]):
        self.nvec = tuple(int(n) for n in nvec)
        if logits.shape[-1] != sum(self.nvec):
            raise ValueError(f"MultiCategorical needs {sum(self.nvec)} logits for nvec={list(self.nvec)}, "
                             f"got {logits.shape[-1]}.")
        self.logits = logits
        self.heads = [D.Categorical(logits=part) for part in logits.split(self.nvec, -1)]
        super().__init__(logits.shape[:-1], torch.Size([len(self.nvec)]), validate_args=False)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> torch.Tensor:
        return torch.stack([head.sample(sample_shape) for head in self.heads], -1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return torch.stack([head.log_prob(v) for head, v in zip(self.heads, value.unbind(-1))], -1).sum(-1)

    def entropy(self) -> torch.Tensor:
        return torch.stack([head.entropy() for head in self.heads], -1).sum(-1)

    @property
    def mode(self) -> torch.Tensor:
        return torch.stack([head.probs.argmax(-1) for head in self.heads], -1)

    @property
    def deterministic_sample(self) -> torch.Tensor:
        return self.mode


@D.register_kl(MultiCategorical, MultiCategorical)
def _kl_multi_categorical(p: MultiCategorical, q: MultiCategorical) -> torch.Tensor:
    if p.nvec != q.nvec:
        raise ValueError(f"KL between MultiCategoricals of different nvec: {list(p.nvec)} and {list(q.nvec)}.")
    return torch.stack([D.kl_divergence(a, b) for a, b in zip(p.heads, q.heads)], -1).sum(-1)
