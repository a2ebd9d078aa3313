"""PPOLoss: the unregularised PPO objective ``-exp(log_w) A`` plus entropy and critic terms.

ClipPPOLoss and KLPENPPOLoss reuse this forward and replace only ``_objective``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from tensordict import TensorDict, TensorDictBase, is_tensor_collection
from tensordict.nn import CompositeDistribution, ProbabilisticTensorDictSequential, TensorDictModule, dispatch
from tensordict.utils import NestedKey

from rlexp.modules.tensor_calls import call_module, get_dist
from rlexp.objectives.common import LossModule
from rlexp.objectives.utils import (CRITIC_LOSS_TYPES, REDUCTIONS, ValueEstimators, broadcast_advantage,
                                   clipped_value_loss, distance_loss, entropy, explained_variance, log_ratio,
                                   normalize_advantage, sum_heads)
from rlexp.objectives.value.base import _default_log_prob_key
from rlexp.registry import losses


def _unique(keys) -> list:
    """The keys in order without repeats; a list entry (one key per action head) contributes its keys."""
    flat = [k for key in keys for k in (key if isinstance(key, list) else [key])]
    return list(dict.fromkeys(flat))


def _stored(td: TensorDictBase, key: NestedKey | list[NestedKey]):
    """The entry under ``key``, or the tensordict of the entries under a list of keys (None if one is missing)."""
    if not isinstance(key, list):
        return td.get(key, None)
    return td.select(*key) if all(k in td.keys(True) for k in key) else None


def _alias(name: str, value, alias_name: str, alias):
    if alias is None:
        return value
    if value is not None:
        raise TypeError(f"Pass only one of {name} and {alias_name}.")
    return alias


def _deprecated_alias(name: str, value, old_name: str, old):
    """An older one-f spelling (``entropy_coef``): accepted with a DeprecationWarning."""
    if old is None:
        return value
    if value is not None:
        raise TypeError(f"Pass only one of {name} and {old_name} (deprecated).")
    warnings.warn(f"{old_name} is deprecated; use {name}.", DeprecationWarning, stacklevel=3)
    return old


@losses.register("ppo")
class PPOLoss(LossModule):
    """PPO loss without ratio regularisation (Schulman et al. 2017, "Proximal Policy Optimization").

    Reads ``advantage`` (computed by the value estimator if absent), the stored action log-prob
    and the action; outputs ``loss_objective``, ``entropy``/``loss_entropy`` (``entropy_bonus``),
    ``loss_critic`` (with a critic and ``critic_coeff > 0``), ``explained_variance`` and ``kl_approx``.
    A composite actor (one distribution per action head) has lists of ``action``/``sample_log_prob``
    keys: the heads' log-probs add up in the weight, ``composite_entropy`` holds each head's entropy,
    and ``entropy_coeff`` may be a mapping from head to coefficient.
    """

    @dataclass
    class _AcceptedKeys:
        """Tensordict keys read by the PPO losses (change them with ``set_keys``)."""

        advantage: NestedKey = "advantage"
        value_target: NestedKey = "value_target"
        value: NestedKey = "state_value"
        sample_log_prob: NestedKey = field(default_factory=_default_log_prob_key)
        action: NestedKey = "action"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"

    default_keys = _AcceptedKeys
    default_value_estimator = ValueEstimators.GAE
    _schedulable_buffers = ("entropy_coeff", "critic_coeff", "clip_value", "max_importance_ratio")
    _estimator_key_names = LossModule._estimator_key_names + ("sample_log_prob",)

    actor_network: ProbabilisticTensorDictSequential
    critic_network: TensorDictModule | None

    def __init__(self, actor_network: ProbabilisticTensorDictSequential | None = None,
                 critic_network: TensorDictModule | None = None, *, entropy_bonus: bool = True,
                 samples_mc_entropy: int = 1, entropy_coeff: float | None = None,
                 log_explained_variance: bool = True, critic_coeff: float | None = None,
                 loss_critic_type: str = "smooth_l1", normalize_advantage: bool = False,
                 normalize_advantage_exclude_dims: tuple[int, ...] = (), gamma: float | None = None,
                 separate_losses: bool = False, advantage_key: str | None = None,
                 value_target_key: str | None = None, value_key: str | None = None, functional: bool = True,
                 actor: ProbabilisticTensorDictSequential | None = None, critic: TensorDictModule | None = None,
                 reduction: str | None = None, clip_value: float | None = None,
                 device: torch.device | None = None, delay_actor: bool = False,
                 max_importance_ratio: float | None = None, entropy_coef: float | None = None,
                 critic_coef: float | None = None):
        actor_network = _alias("actor_network", actor_network, "actor", actor)
        critic_network = _alias("critic_network", critic_network, "critic", critic)
        entropy_coeff = _deprecated_alias("entropy_coeff", entropy_coeff, "entropy_coef", entropy_coef)
        critic_coeff = _deprecated_alias("critic_coeff", critic_coeff, "critic_coef", critic_coef)
        # A critic coefficient of 0 asks for no critic, so it needs no critic_network.
        if actor_network is None or (critic_network is None and critic_coeff not in (None, 0)):
            raise TypeError("Missing positional arguments actor_network or critic_network.")
        if gamma is not None:
            raise TypeError("Passing gamma / lambda parameters through the loss constructor is a deprecated feature. "
                            "To customize your value function, run "
                            "`loss_module.make_value_estimator(ValueEstimators.<value_fun>, gamma=val)`.")
        for key, value in (("advantage", advantage_key), ("value_target", value_target_key), ("value", value_key)):
            if value is not None:
                raise RuntimeError(f"Setting '{key}' via the constructor is deprecated, use "
                                   ".set_keys(<key>='some_key') instead.")
        reduction = "mean" if reduction is None else reduction
        if reduction not in REDUCTIONS:
            raise NotImplementedError(f"Unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}.")
        if loss_critic_type not in CRITIC_LOSS_TYPES:
            raise NotImplementedError(
                f"Unknown loss_critic_type {loss_critic_type!r}; choose one of {', '.join(CRITIC_LOSS_TYPES)}.")
        entropy_coeff_map = None
        if isinstance(entropy_coeff, Mapping):  # one coefficient per head of a composite action
            entropy_coeff_map = {key: float(value) for key, value in entropy_coeff.items()}
            entropy_coeff = 0.0  # the buffer stays, unused
        elif entropy_coeff is not None and not isinstance(entropy_coeff, (float, int, torch.Tensor)):
            raise TypeError("entropy_coeff must be a float or a Mapping[str, float]")
        if delay_actor and not functional:
            raise ValueError("delay_actor=True needs functional=True (the proximal policy is a parameter copy).")
        if max_importance_ratio is not None and not max_importance_ratio > 0:
            raise ValueError(f"max_importance_ratio must be > 0, got {max_importance_ratio}.")
        self._functional = functional
        super().__init__()
        self._entropy_coeff_map = entropy_coeff_map
        self._device = device if device is not None else next(
            (p.device for p in actor_network.parameters()), torch.device("cpu"))
        self.delay_actor = delay_actor
        self._set_networks(actor_network, critic_network, functional, separate_losses)

        self.entropy_bonus = entropy_bonus
        self.samples_mc_entropy = samples_mc_entropy
        self.log_explained_variance = log_explained_variance
        self.loss_critic_type = loss_critic_type
        self.normalize_advantage = normalize_advantage
        self.normalize_advantage_exclude_dims = tuple(normalize_advantage_exclude_dims)
        self.separate_losses = separate_losses
        self.reduction = reduction
        self.register_coeff_buffer("entropy_coeff", 0.01 if entropy_coeff is None else entropy_coeff)
        if critic_network is not None and critic_coeff is None:
            critic_coeff = 1.0
        self.register_coeff_buffer("critic_coeff", critic_coeff)
        self._set_clip_value(clip_value)
        self.register_coeff_buffer("max_importance_ratio", max_importance_ratio)
        self.out_keys = self._default_out_keys()
        self._set_keys_from_actor(actor_network)

    # construction helpers ---------------------------------------------------------------------------
    def _set_networks(self, actor_network, critic_network, functional: bool, separate_losses: bool) -> None:
        if functional:
            self.convert_to_functional(actor_network, "actor_network", create_target_params=self.delay_actor)
        else:
            self.actor_network = actor_network
            self.actor_network_params = None
        if critic_network is None:
            self.critic_network = None
            self.critic_network_params = None
        elif functional:
            shared = list(actor_network.parameters()) if separate_losses else None
            self.convert_to_functional(critic_network, "critic_network", compare_against=shared)
        else:
            self.critic_network = critic_network
            self.critic_network_params = None

    def _set_clip_value(self, clip_value) -> None:
        if isinstance(clip_value, bool):
            raise ValueError(f"clip_value must be a number or None for {type(self).__name__}, got {clip_value}.")
        self.register_coeff_buffer("clip_value", clip_value)

    # out_keys = head + entropy terms + critic terms + tail; subclasses extend head and tail.
    _out_keys_head: tuple[str, ...] = ("loss_objective",)
    _out_keys_tail: tuple[str, ...] = ()

    def _default_out_keys(self) -> list:
        keys = list(self._out_keys_head)
        if self.entropy_bonus:
            keys += ["entropy", "loss_entropy"]
        keys.append("loss_critic")  # listed even without a critic, as in torchrl
        if self.clip_value is not None:
            keys.append("value_clip_fraction")
        return keys + list(self._out_keys_tail)

    def _set_in_keys(self) -> None:
        keys = self._tensor_keys
        actor_in = list(self.actor_network.in_keys)
        critic_in = list(self.critic_network.in_keys) if self.critic_network is not None else []
        self.in_keys = _unique([*actor_in, *[("next", k) for k in actor_in], *critic_in, keys.action,
                                keys.sample_log_prob, ("next", keys.reward), ("next", keys.done),
                                ("next", keys.terminated)])

    @property
    def functional(self) -> bool:
        return self._functional

    # forward pieces ---------------------------------------------------------------------------------
    def _advantage(self, td: TensorDictBase) -> torch.Tensor:
        advantage = td.get(self._tensor_keys.advantage, None)
        if advantage is None:
            self._run_value_estimator(td)
            advantage = td[self._tensor_keys.advantage]
        if self.normalize_advantage and advantage.numel() > 1:
            if advantage.numel() > td.numel() and not self.normalize_advantage_exclude_dims:
                warnings.warn("The advantage has more elements than the batch; it is standardised over all of "
                              "them. Use normalize_advantage_exclude_dims to keep dimensions independent.",
                              stacklevel=4)
            advantage = normalize_advantage(advantage, self.normalize_advantage_exclude_dims,
                                            td.get("shifted_valid", None))
        return advantage

    def _run_value_estimator(self, td: TensorDictBase) -> None:
        params = self.critic_network_params.detach() if self.critic_network_params is not None else None
        self.value_estimator(td, params=params)

    def _log_weight(self, td: TensorDictBase):
        """``(log_w, delta, dist, kl_approx_elem)``; ``log_w = log pi(a) - log pi_old(a)`` (trailing dim added).

        With ``delay_actor`` the reference is the proximal (target-parameter) policy and ``delta``
        is ``log pi_prox - log pi_old``; ``max_importance_ratio`` caps ``log_w + delta`` at
        ``log M`` through ``delta``. ``delta`` is None when neither is in use.
        """
        keys = self._tensor_keys
        prev_log_prob = _stored(td, keys.sample_log_prob)
        if prev_log_prob is None:
            raise KeyError(f"Couldn't find the log-prob {keys.sample_log_prob} in the input data.")
        if prev_log_prob.requires_grad:
            raise RuntimeError(f"tensordict stored {keys.sample_log_prob} requires grad.")
        with self._params_of("actor_network"):
            dist = get_dist(self.actor_network, td)
        if isinstance(dist, CompositeDistribution):
            action = td.select(*(keys.action if isinstance(keys.action, list) else [keys.action]))
            if not is_tensor_collection(prev_log_prob):
                warnings.warn("You are using a composite distribution, yet your log-probability is a tensor. Make "
                              "sure you have called tensordict.nn.set_composite_lp_aggregate(False).set() at the "
                              "beginning of your script to get a proper composite log-prob.", UserWarning,
                              stacklevel=4)
        else:
            action = td[keys.action]
        if action.requires_grad:
            raise RuntimeError(f"tensordict stored {keys.action} requires grad.")
        log_prob = dist.log_prob(action)
        delta = None
        if self.delay_actor:
            with torch.no_grad():
                reference = self._proximal_dist(td).log_prob(action)
            delta = log_ratio(reference, prev_log_prob).unsqueeze(-1)
        else:
            reference = prev_log_prob
        log_weight = log_ratio(log_prob, reference).unsqueeze(-1)
        if self.max_importance_ratio is not None:
            cap = math.log(float(self.max_importance_ratio)) - log_weight.detach()
            delta = cap.clamp_max(0) if delta is None else torch.minimum(delta, cap)
        return log_weight, delta, dist, log_ratio(reference, log_prob).unsqueeze(-1)

    def _proximal_dist(self, td: TensorDictBase):
        """The policy under the delayed (target) actor parameters, evaluated without gradient."""
        with self.target_actor_network_params.to_module(self.actor_network):
            return self.actor_network.get_dist(td.copy())

    @staticmethod
    def _behaviour(log_weight: torch.Tensor, delta: torch.Tensor | None) -> torch.Tensor:
        return log_weight if delta is None else log_weight + delta

    def _objective(self, tensordict: TensorDictBase, td: TensorDictBase, log_weight: torch.Tensor,
                   delta: torch.Tensor | None, advantage: torch.Tensor, dist) -> dict:
        """The policy term(s): ``loss_objective`` and the loss-specific logged values."""
        return {"loss_objective": -self._behaviour(log_weight, delta).exp() * advantage}

    def _weighted_loss_entropy(self, entropy: torch.Tensor | TensorDictBase) -> torch.Tensor:
        """``-entropy_coeff * H``, or ``-sum_h c_h H_h`` over the heads with a mapping of coefficients.

        A mapping is keyed by each head's entropy key (``<sample key>_entropy``, as in
        ``composite_entropy``) or by its log-prob key (``<sample key>_log_prob``).
        """
        if self._entropy_coeff_map is None:
            return -self.entropy_coeff * sum_heads(entropy)
        loss = None
        for head, head_entropy in entropy.items(include_nested=True, leaves_only=True):
            if head_entropy.ndim > entropy.batch_dims:  # a head with feature dims: its joint entropy
                head_entropy = head_entropy.flatten(entropy.batch_dims, -1).sum(-1)
            term = -self._head_entropy_coeff(head) * head_entropy
            loss = term if loss is None else loss + term
        return loss

    def _head_entropy_coeff(self, head: NestedKey) -> float:
        names = [head]
        last = head if isinstance(head, str) else head[-1]
        if last.endswith("_entropy"):
            log_prob_last = last[: -len("_entropy")] + "_log_prob"
            names.append(log_prob_last if isinstance(head, str) else (*head[:-1], log_prob_last))
        for name in names:
            if name in self._entropy_coeff_map:
                return self._entropy_coeff_map[name]
        raise KeyError(f"Missing entropy coeff for head '{head}'")

    def _critic_active(self) -> bool:
        return self.critic_network is not None and self.critic_coeff is not None and bool(self.critic_coeff > 0)

    def loss_critic(self, tensordict: TensorDictBase):
        """``(critic_coeff * d(target, v), value_clip_fraction or None, explained_variance or None)``, unreduced."""
        keys = self._tensor_keys
        if self.separate_losses:
            tensordict = tensordict.detach()
        target = tensordict.get(keys.value_target, None)
        if target is None:
            raise KeyError(f"the key {keys.value_target} was not found in the input tensordict. Make sure you "
                           "provided the right key and the value_target (i.e. the target return) has been "
                           "retrieved accordingly. Advantage classes such as GAE, TDLambdaEstimate and "
                           "TDEstimate all return a 'value_target' entry that can be used for the value loss.")
        old_value = None
        if self.clip_value is not None:
            old_value = tensordict.get(keys.value, None)
            if old_value is None:
                raise KeyError(f"clip_value is set to {float(self.clip_value)}, but the key {keys.value} was not "
                               "found in the input tensordict. Pass the critic's values of the collected states "
                               f"under {keys.value!r} (set_keys(value=...) names another entry).")
        with self._params_of("critic_network"):
            value = call_module(self.critic_network, tensordict.select(*self.critic_network.in_keys))[keys.value]
        clip_fraction = None
        if old_value is not None:
            loss, clip_fraction = clipped_value_loss(target, value, old_value, self.clip_value, self.loss_critic_type)
        else:
            loss = distance_loss(target, value, self.loss_critic_type)
        ev = explained_variance(target, value) if self.log_explained_variance else None
        return self.critic_coeff * loss, clip_fraction, ev

    @dispatch
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Compute the loss terms for a batch ``[*B]`` of transitions (the input is not modified)."""
        td = tensordict.copy()
        advantage = self._advantage(td)
        log_weight, delta, dist, kl_approx = self._log_weight(td)
        advantage = broadcast_advantage(advantage, log_weight)
        out = self._objective(tensordict, td, log_weight, delta, advantage, dist)
        out["kl_approx"] = kl_approx.detach().mean()
        if self.entropy_bonus:
            ent = entropy(dist, self.samples_mc_entropy).unsqueeze(-1)
            if is_tensor_collection(ent):
                out["composite_entropy"] = ent.detach()  # per head
            out["entropy"] = sum_heads(ent).detach().mean()
            out["loss_entropy"] = self._weighted_loss_entropy(ent)
        if self._critic_active():
            out["loss_critic"], clip_fraction, ev = self.loss_critic(td)
            if clip_fraction is not None:
                out["value_clip_fraction"] = clip_fraction
            if ev is not None:
                out["explained_variance"] = ev
        return TensorDict(self._reduce_losses(tensordict, out, self.reduction), batch_size=torch.Size([]))
