"""KLPENPPOLoss: PPO with an adaptive KL penalty ``-(w A - beta KL(pi_old || pi))``."""

from __future__ import annotations

from functools import cached_property

import torch
from torch._C._functorch import is_batchedtensor
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
    per_run_buffers = ("beta",)
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
        if is_batchedtensor(kl):  # under torch.func.vmap, where ``.data`` is refused: the same terms, see below
            return self._objective_batched(log_weight, delta, advantage, kl)
        loss = -(self._behaviour(log_weight, delta).exp() * advantage - self.beta * kl)
        self._adapt_beta(kl.detach().mean())
        return {"loss_objective": loss, "kl": kl.detach()}

    def _objective_batched(self, log_weight, delta, advantage, kl) -> dict:
        """The loss with the value of the current beta and the KL gradient of the adapted one, as the
        in-place update through ``.data`` gives; beta is then updated out of autograd's sight."""
        beta, adapted = self.beta, self.beta * self._beta_factor(kl.detach().mean())
        penalty = adapted * kl + (beta - adapted) * kl.detach()
        loss = -(self._behaviour(log_weight, delta).exp() * advantage - penalty)
        with torch.no_grad():
            self.beta.copy_(adapted)
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
        self.beta.data *= self._beta_factor(kl_mean)

    def _beta_factor(self, kl_mean: torch.Tensor) -> torch.Tensor:
        """``increment`` above ``1.5 dtarg``, ``decrement`` below ``dtarg / 1.5``, else 1 (branch-free for vmap)."""
        return torch.where(kl_mean > 1.5 * self.dtarg, self.increment,
                           torch.where(kl_mean < self.dtarg / 1.5, self.decrement, 1.0))

    def reset(self) -> None:
        """Restore the initial ``beta`` (in place)."""
        self.beta.data.fill_(self._beta_init)
