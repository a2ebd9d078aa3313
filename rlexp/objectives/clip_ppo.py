"""ClipPPOLoss: PPO's clipped surrogate ``-min(w A, clip(w, 1-eps, 1+eps) A)``."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictSequential, TensorDictModule

from rlexp.objectives.ppo import PPOLoss
from rlexp.objectives.utils import inherit_keywords
from rlexp.registry import losses


def effective_sample_size(log_weight: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``(sum w)^2 / (N sum w^2)`` along dim 0 in log-sum-exp form; 1 when all ratios are equal.

    With ``mask`` (the shape of ``log_weight`` without its trailing 1), over the masked entries only.
    """
    lw = log_weight.detach().squeeze(-1)
    if mask is None:
        return (2 * lw.logsumexp(0) - (2 * lw).logsumexp(0)).exp() / lw.shape[0]
    lw, dims = lw.masked_fill(~mask, -torch.inf), tuple(range(mask.ndim))
    return (2 * lw.logsumexp(dims) - (2 * lw).logsumexp(dims)).exp() / mask.sum()


def clip_epsilon_pair(clip_epsilon: float | Sequence[float]) -> tuple[float, float]:
    """``(eps_low, eps_high)`` from a float or a pair; ``ValueError`` unless ``0 <= low < 1`` and ``high >= 0``."""
    if isinstance(clip_epsilon, Sequence):
        if len(clip_epsilon) != 2:
            raise ValueError(f"clip_epsilon tuple must have length 2, got {clip_epsilon}.")
        low, high = (float(e) for e in clip_epsilon)
    else:
        low = high = float(clip_epsilon)
    if low < 0 or high < 0:
        raise ValueError(f"clip_epsilon values must be non-negative, got ({low}, {high}).")
    if low >= 1:
        raise ValueError(f"clip_epsilon low must be < 1 (to keep 1 - eps_low > 0), got {low}.")
    return low, high


@losses.register("clip_ppo")
class ClipPPOLoss(PPOLoss):
    """Clipped PPO (Schulman et al. 2017). ``clip_epsilon`` is a float or ``(eps_low, eps_high)``.

    Extra outputs: ``clip_fraction`` (share of clipped log-weights), ``ESS`` (per position after
    dim 0), ``max_ratio`` and ``mean_ratio``. ``clip_value=True`` clips the critic by ``clip_epsilon``.
    """

    _schedulable_buffers = PPOLoss._schedulable_buffers + ("clip_epsilon", "clip_epsilon_low", "clip_epsilon_high")
    _out_keys_head = ("loss_objective", "clip_fraction")
    _out_keys_tail = ("ESS", "kl_approx", "max_ratio", "mean_ratio")

    @inherit_keywords(PPOLoss.__init__)
    def __init__(self, actor_network: ProbabilisticTensorDictSequential | None = None,
                 critic_network: TensorDictModule | None = None, *,
                 clip_epsilon: float | tuple[float, float] = 0.2, clip_value: bool | float | None = None, **kwargs):
        if isinstance(clip_epsilon, Sequence):
            if clip_value is True:
                raise ValueError("clip_value=True cannot infer the value-clip threshold from an asymmetric "
                                 "clip_epsilon tuple. Pass an explicit float threshold instead, e.g. clip_value=0.2.")
            self._clip_pair = clip_epsilon_pair(clip_epsilon)
        else:
            self._clip_pair = None
            if clip_value is True:
                clip_value = float(clip_epsilon)
        if clip_value is False:
            clip_value = None
        super().__init__(actor_network, critic_network, clip_value=clip_value, **kwargs)
        if self._clip_pair is None:
            self.register_coeff_buffer("clip_epsilon", clip_epsilon)
        else:
            self.clip_epsilon = None
            self.register_coeff_buffer("clip_epsilon_low", self._clip_pair[0])
            self.register_coeff_buffer("clip_epsilon_high", self._clip_pair[1])

    def _clip_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-space bounds ``(log1p(-eps_low), log1p(eps_high))``."""
        if self.clip_epsilon is not None:
            return (-self.clip_epsilon).log1p(), self.clip_epsilon.log1p()
        return (-self.clip_epsilon_low).log1p(), self.clip_epsilon_high.log1p()

    def _run_value_estimator(self, td: TensorDictBase) -> None:
        if self.critic_network is None:
            raise RuntimeError("Critic network is not specified, cannot compute advantage within forward.")
        super()._run_value_estimator(td)

    def _objective(self, tensordict, td, log_weight, delta, advantage, dist) -> dict:
        low, high = self._clip_bounds()
        clipped = log_weight.clamp(low, high)
        behaviour = self._behaviour(log_weight, delta)
        gain = torch.min(behaviour.exp() * advantage, self._behaviour(clipped, delta).exp() * advantage)
        ratio = behaviour.detach().exp()
        return {
            "loss_objective": -gain,
            "clip_fraction": (clipped != log_weight).float().mean().detach(),
            "ESS": effective_sample_size(behaviour),
            "max_ratio": ratio.max(),
            "mean_ratio": ratio.mean(),
        }
