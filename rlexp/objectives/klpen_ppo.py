"""KLPENPPOLoss: PPO with an adaptive KL penalty ``-(w A - beta KL(pi_old || pi))``."""

from __future__ import annotations

from functools import cached_property

import torch
from tensordict import TensorDictBase
from tensordict.nn import ProbabilisticTensorDictModule, ProbabilisticTensorDictSequential, TensorDictModule

from rlexp.objectives.ppo import PPOLoss, _unique
from rlexp.objectives.utils import inherit_keywords, kl_divergence
from rlexp.registry import losses


@losses.register("klpen_ppo")
class KLPENPPOLoss(PPOLoss):
    """KL-penalised PPO (Schulman et al. 2017, section 4).

    The old policy is rebuilt from the distribution parameters stored in the input (e.g.
    ``logits`` or ``loc``/``scale``). After each forward, ``beta`` is multiplied by ``increment``
    if the mean KL exceeds ``1.5 dtarg`` and by ``decrement`` if it is below ``dtarg / 1.5``.
    """

    _schedulable_buffers = PPOLoss._schedulable_buffers + ("beta",)
    _out_keys_head = ("loss_objective", "kl")

    @inherit_keywords(PPOLoss.__init__)
    def __init__(self, actor_network: ProbabilisticTensorDictSequential | None = None,
                 critic_network: TensorDictModule | None = None, *, dtarg: float = 0.01, beta: float = 1.0,
                 increment: float = 2, decrement: float = 0.5, samples_mc_kl: int = 1, **kwargs):
        if increment < 1:
            raise ValueError(f"increment should be >= 1.0 in KLPENPPOLoss, got {increment:4.4f}")
        if decrement > 1:
            raise ValueError(f"decrement should be <= 1.0 in KLPENPPOLoss, got {decrement:4.4f}")
        super().__init__(actor_network, critic_network, **kwargs)
        self.dtarg = dtarg
        self._beta_init = beta
        self.register_coeff_buffer("beta", beta)
        self.increment = increment
        self.decrement = decrement
        self.samples_mc_kl = samples_mc_kl

    @cached_property
    def _dist_module(self) -> ProbabilisticTensorDictModule:
        """The actor's last probabilistic module, whose in_keys are the distribution parameters."""
        return [m for m in self.actor_network.modules() if isinstance(m, ProbabilisticTensorDictModule)][-1]

    def _set_in_keys(self) -> None:
        super()._set_in_keys()
        self.in_keys = _unique([*self.in_keys, *self._dist_module.in_keys])

    def _objective(self, tensordict, td, log_weight, delta, advantage, dist) -> dict:
        kl = kl_divergence(self._previous_dist(tensordict, td), dist, self.samples_mc_kl).unsqueeze(-1)
        loss = -(self._behaviour(log_weight, delta).exp() * advantage - self.beta * kl)
        self._adapt_beta(kl.detach().mean())
        return {"loss_objective": loss, "kl": kl.detach()}

    def _previous_dist(self, tensordict: TensorDictBase, td: TensorDictBase):
        """The old policy: the delayed actor if any, else the distribution parameters stored in the input.

        The stored parameters are read from the caller's tensordict, because this forward's actor
        call overwrote them in the working copy ``td``.
        """
        if self.delay_actor:
            with torch.no_grad():
                return self._proximal_dist(td)
        module = self._dist_module
        for key in module.in_keys:
            tensordict[key]  # KeyError if a parameter was not stored
        return module.get_dist(tensordict)

    def _adapt_beta(self, kl_mean: torch.Tensor) -> None:
        # Through ``.data`` like torchrl: autograd saved this buffer, so the KL gradient of this
        # call already uses the updated beta; a plain in-place op would break backward.
        if kl_mean > 1.5 * self.dtarg:
            self.beta.data *= self.increment
        elif kl_mean < self.dtarg / 1.5:
            self.beta.data *= self.decrement

    def reset(self) -> None:
        """Restore the initial ``beta`` (in place)."""
        self.beta.data.fill_(self._beta_init)
