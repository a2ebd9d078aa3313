"""Entropy and KL of policy distributions: closed form where torch has one, Monte Carlo otherwise."""

from __future__ import annotations

import torch
from torch import distributions as D


def _draw(dist: D.Distribution, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_samples`` draws and their log-probs; reparameterised when the distribution allows it."""
    shape = torch.Size([num_samples])
    if dist.has_rsample:
        if hasattr(dist, "rsample_and_log_prob"):
            return dist.rsample_and_log_prob(shape)
        sample = dist.rsample(shape)
    else:
        if hasattr(dist, "sample_and_log_prob"):
            return dist.sample_and_log_prob(shape)
        sample = dist.sample(shape)
    return sample, dist.log_prob(sample)


def entropy(dist: D.Distribution, samples_mc: int) -> torch.Tensor:
    """``dist.entropy()`` if available and finite, else ``-mean_S log p(x_s)`` over ``samples_mc`` draws."""
    try:
        value = dist.entropy()
    except NotImplementedError:
        value = None
    if value is None or not bool(torch.isfinite(value).all()):
        value = -_draw(dist, samples_mc)[1].mean(0)
    return value


def kl_divergence(prev: D.Distribution, cur: D.Distribution, samples_mc: int) -> torch.Tensor:
    """``KL(prev || cur)``: torch's registered closed form, else a Monte-Carlo mean over draws of ``prev``."""
    try:
        return D.kl_divergence(prev, cur)
    except NotImplementedError:
        sample = prev.sample(torch.Size([samples_mc]))
        return (prev.log_prob(sample) - cur.log_prob(sample)).mean(0)
