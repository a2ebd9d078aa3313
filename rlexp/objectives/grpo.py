"""GRPOLoss for generic policies: PPO's clipped surrogate on group-relative advantages, no critic."""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass, field

import torch
from torch._C._functorch import is_batchedtensor
from tensordict import TensorDict, TensorDictBase, is_tensor_collection
from tensordict.nn import CompositeDistribution, ProbabilisticTensorDictSequential, dispatch
from tensordict.utils import NestedKey

from rlexp.modules.recurrent_mode import set_recurrent_mode
from rlexp.modules.tensor_calls import get_dist
from rlexp.objectives.clip_ppo import clip_epsilon_pair, effective_sample_size
from rlexp.objectives.common import LossModule
from rlexp.objectives.ppo import _stored, _unique
from rlexp.objectives.utils import (REDUCTIONS, broadcast_mask, entropy, find_loss_mask, inherit_keywords,
                                    reduce_loss, sum_heads)
from rlexp.objectives.value.base import _default_log_prob_key
from rlexp.objectives.value.group_relative import GroupRelativeEstimator
from rlexp.registry import ConfigError, losses

AGGREGATIONS = ("token_mean", "prompt_mean", "none")
# torchrl's LLM-only options: accepted and ignored without a warning.
_LLM_OPTIONS = ("masking_strategy", "ref_log_prob_padding_side", "ref_log_prob_padding_value")


def k3_kl(other: torch.Tensor, log_prob: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mean(expm1(d) - d)``, ``d = other - log_prob`` on ``mask`` and 0 elsewhere (still counted)."""
    zero = log_prob.new_zeros(())
    delta = torch.where(mask, other, zero) - torch.where(mask, log_prob, zero)
    return (torch.expm1(delta) - delta).mean()


class GRPOLoss(LossModule):
    """GRPO (Shao et al. 2024, "DeepSeekMath") for any ``ProbabilisticTensorDictSequential`` actor.

    The clipped surrogate ``-min(w A, clip(w, 1-eps_low, 1+eps_high) A)`` on a precomputed
    advantage (see ``GroupRelativeEstimator``); a NaN stored log-prob marks an invalid sample.
    ``aggregation`` reduces ``loss_objective``/``loss_entropy``: ``"token_mean"`` (masked mean,
    also honouring ``("collector", "mask")``), ``"prompt_mean"`` (mean over dim -2, then over dim
    0) or ``"none"``. Optional k3 KL penalties to the reference (``ref_log_prob``) and behaviour
    policies. ``gamma`` and ``clip_value`` are accepted and unused (no critic), as in torchrl.
    ``ref_update_interval`` (rlexp, unused by forward) tells the trainer to refresh the reference
    policy every that many iterations; None keeps the initial policy.
    """

    actor_in_eval_mode = True

    @dataclass
    class _AcceptedKeys:
        """Tensordict keys read by GRPOLoss (change them with ``set_keys``)."""

        advantage: NestedKey = "advantage"
        action: NestedKey = "action"
        sample_log_prob: NestedKey = field(default_factory=_default_log_prob_key)
        ref_log_probs: NestedKey = "ref_log_prob"

    default_keys = _AcceptedKeys
    _schedulable_buffers = ("clip_epsilon_low", "clip_epsilon_high")

    actor_network: ProbabilisticTensorDictSequential

    def __init__(self, actor_network: ProbabilisticTensorDictSequential, *,
                 clip_epsilon: float | tuple[float, float] = 0.2, kl_mask_threshold: float | None = None,
                 aggregation: str | None = "token_mean", entropy_bonus: bool = True, samples_mc_entropy: int = 1,
                 entropy_coeff: float = 0.01, gamma: float | None = None, reduction: str | None = None,
                 clip_value: bool | float | None = None, kl_to_ref_coeff: float | None = None,
                 kl_to_inference_coeff: float | None = None, device: torch.device | None = None,
                 ref_update_interval: int | None = None, **kwargs):
        aggregation = "token_mean" if aggregation is None else aggregation
        reduction = "mean" if reduction is None else reduction
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}.")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
        if ref_update_interval is not None and (isinstance(ref_update_interval, bool)
                                                or not isinstance(ref_update_interval, int) or ref_update_interval < 1):
            raise ValueError(f"ref_update_interval must be None or a positive integer, got {ref_update_interval!r}.")
        ignored = sorted(set(kwargs) - set(_LLM_OPTIONS))
        if ignored:
            warnings.warn(f"GRPOLoss ignores the keyword arguments {ignored} (as torchrl does); use set_keys for "
                          "key names.", stacklevel=2)
        low, high = clip_epsilon_pair(clip_epsilon)
        super().__init__()
        self._device = device if device is not None else next(
            (p.device for p in actor_network.parameters()), torch.device("cpu"))
        self.actor_network = actor_network
        self.register_coeff_buffer("clip_epsilon_low", low)
        self.register_coeff_buffer("clip_epsilon_high", high)
        self.kl_mask_threshold = kl_mask_threshold
        self.aggregation = aggregation
        self.entropy_bonus = entropy_bonus
        self.samples_mc_entropy = samples_mc_entropy
        self.entropy_coeff = float(entropy_coeff)
        self.reduction = reduction
        self.kl_to_ref_coeff = kl_to_ref_coeff
        self.kl_to_inference_coeff = kl_to_inference_coeff
        self.ref_update_interval = ref_update_interval
        self.out_keys = ["loss_objective", "clip_fraction", "ESS", "kl_approx",
                         *(["entropy", "loss_entropy"] if entropy_bonus else []),
                         "loss_kl_to_ref", "kl_to_ref", "loss_kl_to_inference", "kl_to_inference"]
        self._set_keys_from_actor(actor_network)

    @property
    def functional(self) -> bool:
        """False: the actor runs with its own parameters (torchrl's GRPOLoss is not functional either)."""
        return False

    def _set_in_keys(self) -> None:
        keys = self._tensor_keys
        self.in_keys = _unique([*self.actor_network.in_keys, keys.action, keys.sample_log_prob, keys.advantage,
                                keys.ref_log_probs])

    def make_value_estimator(self, value_type=None, **hyperparams) -> None:
        """Only ``GroupRelativeEstimator`` fits (no critic): an instance, the class, ``"group_relative"``
        or None, the last three built with ``hyperparams``."""
        if isinstance(value_type, GroupRelativeEstimator) and not hyperparams:
            estimator = value_type
        elif value_type is None or value_type is GroupRelativeEstimator or value_type == "group_relative":
            if "group_size" not in hyperparams:
                raise ConfigError("GRPOLoss has no default value estimator: give it a GroupRelativeEstimator "
                                  "(value_estimator=group_relative with its group_size).")
            estimator = GroupRelativeEstimator(**hyperparams)
        else:
            raise ConfigError(f"GRPOLoss has no critic, so its advantages come from value_estimator=group_relative; "
                              f"got {getattr(value_type, '__name__', None) or type(value_type).__name__}. Drop the value_estimator "
                              "override (loss=grpo selects group_relative) or choose value_estimator=group_relative.")
        self._value_estimator = estimator
        self.value_type = GroupRelativeEstimator
        self._apply_keys_to_estimator(estimator)

    # forward pieces ---------------------------------------------------------------------------------
    def _read(self, td: TensorDictBase, key: NestedKey, what: str) -> torch.Tensor:
        value = td.get(key, None)
        if value is None:
            raise ValueError(f"{what.capitalize()} key {key} not in tensordict.")
        return value

    def _aggregate(self, loss: torch.Tensor, mask: torch.Tensor, tensordict: TensorDictBase) -> torch.Tensor:
        """Reduce a ``[*B, 1]`` loss term over the valid samples ``mask`` ``[*B]``."""
        valid = mask.unsqueeze(-1)
        if self.aggregation == "none" or self.reduction == "none":
            return torch.where(valid, loss, loss.new_zeros(()))
        if self.aggregation == "prompt_mean":
            total = torch.where(valid, loss, loss.new_zeros(())).sum(-2)
            return (total / valid.sum(-2).clamp_min(1)).mean(0)
        loss_mask = find_loss_mask(tensordict, self.loss_mask_key)
        if loss_mask is not None:
            valid = valid & broadcast_mask(loss_mask, valid)
        return reduce_loss(loss, "mean", valid)  # token_mean is a mean even with reduction="sum"

    def _reference_log_prob(self, td: TensorDictBase, log_prob: torch.Tensor) -> torch.Tensor:
        ref = td[self._tensor_keys.ref_log_probs]
        if ref.ndim == log_prob.ndim + 1:
            ref = ref.squeeze(-1)
        if ref.shape != log_prob.shape:
            raise ValueError(f"cur_log_prob and ref_log_prob must have the same shape, got {log_prob.shape=} and "
                             f"{ref.shape=} (ref_log_prob read from {self._tensor_keys.ref_log_probs!r}).")
        return ref

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Loss terms and diagnostics for a batch ``[*B]`` (the input is not modified)."""
        keys = self._tensor_keys
        td = tensordict.copy()
        advantage = self._read(td, keys.advantage, "advantage")
        prev = _stored(td, keys.sample_log_prob)
        if prev is None:
            raise KeyError(f"Couldn't find the log-prob {keys.sample_log_prob} in the input data.")
        if prev.requires_grad:
            raise RuntimeError(f"tensordict stored {keys.sample_log_prob} requires grad.")
        dist = get_dist(self.actor_network, td)
        if isinstance(dist, CompositeDistribution):
            # Several action heads: the joint log-prob (summed over heads) plays the single head's role,
            # and a NaN stored log-prob in any head marks the sample invalid.
            action = td.select(*(keys.action if isinstance(keys.action, list) else [keys.action]))
            log_prob, prev = sum_heads(dist.log_prob(action)), sum_heads(prev)
        else:
            log_prob = dist.log_prob(self._read(td, keys.action, "action"))
        if prev.shape != log_prob.shape:
            raise ValueError(f"Shape mismatch detected in GRPOLoss: current log-prob shape {log_prob.shape} != "
                             f"previous log-prob shape {prev.shape} (read from {keys.sample_log_prob!r}).")
        mask = torch.isfinite(prev)
        zero = log_prob.new_zeros(())
        cur = torch.where(mask, log_prob, zero)
        prev_m = torch.where(mask, prev, zero)
        log_weight = (cur - prev_m).unsqueeze(-1)
        if advantage.ndim != log_weight.ndim:
            raise ValueError(f"advantage and log_weight must have the same number of dimensions, got "
                             f"{advantage.ndim=} and {log_weight.ndim=}; the advantage needs a trailing singleton "
                             "dimension.")
        out = {"kl_approx": (prev_m - cur).detach().mean()}
        if self.kl_mask_threshold is not None and self.kl_mask_threshold > 0:
            mask = mask & (0.5 * (cur - prev_m) ** 2 <= self.kl_mask_threshold)
        out["ESS"] = effective_sample_size(log_weight, mask) if is_batchedtensor(log_weight) else \
            effective_sample_size(log_weight[mask])  # (vmap cannot batch a boolean selection)
        clipped = log_weight.clamp((-self.clip_epsilon_low).log1p(), self.clip_epsilon_high.log1p())
        out["clip_fraction"] = (clipped != log_weight).float().mean().detach()
        objective = -torch.min(log_weight.exp() * advantage, clipped.exp() * advantage)
        out["loss_objective"] = self._aggregate(objective, mask, tensordict)
        if self.entropy_bonus:
            ent = entropy(dist, self.samples_mc_entropy)
            if is_tensor_collection(ent):
                out["composite_entropy"] = ent.detach()  # per head
                ent = sum_heads(ent)
            out["entropy"] = ent.detach().mean()
            out["loss_entropy"] = self._aggregate(-self.entropy_coeff * ent.unsqueeze(-1), mask, tensordict)
        if self.kl_to_ref_coeff is not None and self.kl_to_ref_coeff > 0:
            kl = k3_kl(self._reference_log_prob(td, log_prob), cur, mask)
            out["loss_kl_to_ref"] = self.kl_to_ref_coeff * kl
            out["kl_to_ref"] = kl.detach()
        if self.kl_to_inference_coeff is not None:
            kl = k3_kl(prev, cur, mask)
            out["loss_kl_to_inference"] = self.kl_to_inference_coeff * kl
            out["kl_to_inference"] = kl.detach()
        return TensorDict(out, batch_size=torch.Size([]))


@losses.register("grpo")
@inherit_keywords(GRPOLoss.__init__)
def grpo(actor_network: ProbabilisticTensorDictSequential, critic_network=None, **kwargs) -> GRPOLoss:
    """Registry builder for ``loss=grpo``: the trainer passes ``(actor, critic)``, and GRPO has no critic."""
    if critic_network is not None:
        raise ConfigError("loss=grpo uses no critic (its advantages are group-relative), but a critic network was "
                          "given; build the policy without a critic.")
    return GRPOLoss(actor_network, **kwargs)


class ReferencePolicy:
    """A frozen copy of the actor whose log-probs of the collected actions GRPO's KL term reads.

    Refreshed from the live actor every ``interval`` iterations (``loss.ref_update_interval``), or
    kept at the initial policy when that is None.
    """

    def __init__(self, actor, interval: int | None, log_prob_key: str):
        self.actor, self.interval, self.key = actor, interval, log_prob_key
        self.frozen = copy.deepcopy(actor).eval().requires_grad_(False)

    @classmethod
    def for_loss(cls, loss_module, actor) -> ReferencePolicy | None:
        """A reference for losses with a KL-to-reference term, else None."""
        if not getattr(loss_module, "kl_to_ref_coeff", None):
            return None
        return cls(actor, loss_module.ref_update_interval, loss_module.tensor_keys.ref_log_probs)

    @torch.no_grad()
    def write_log_prob(self, rollout: TensorDict, iteration: int) -> None:
        if self.interval and iteration > 1 and (iteration - 1) % self.interval == 0:
            self.frozen.load_state_dict(self.actor.state_dict())
        with set_recurrent_mode(True):  # a recurrent reference replays each row; the rollout stays unchanged
            dist = self.frozen.get_dist(rollout.select(*self.frozen.in_keys, strict=False))
        rollout[self.key] = dist.log_prob(rollout["action"])
