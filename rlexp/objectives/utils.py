"""Stateless helpers of the losses: estimator types, advantages, entropy/KL, critic terms, reduction.

``common.LossModule`` and the losses build on these functions and constants.
"""

from __future__ import annotations

import inspect
from enum import Enum

import torch
from torch._C._functorch import is_batchedtensor
from tensordict import TensorDict, TensorDictBase, is_tensor_collection
from tensordict.nn import CompositeDistribution, composite_lp_aggregate, set_composite_lp_aggregate
from tensordict.utils import NestedKey
from torch import distributions as D
from torch.nn import functional as F


# constructor signatures ---------------------------------------------------------------------------
def inherit_keywords(base_init):
    """Show ``base_init``'s keyword-only parameters in the decorated ``__init__``'s signature.

    Subclass constructors forward ``**kwargs`` to the base; the combined signature lets the
    config registry validate option names, and unknown names still fail in the base call.
    """

    def decorate(init):
        sig = inspect.signature(init)
        own = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
        names = {p.name for p in own}
        inherited = [p for p in inspect.signature(base_init).parameters.values()
                     if p.kind is p.KEYWORD_ONLY and p.name not in names]
        init.__signature__ = sig.replace(parameters=own + inherited)
        return init

    return decorate


# value-estimator types ----------------------------------------------------------------------------
class ValueEstimators(Enum):
    """Value-estimator types accepted by ``LossModule.make_value_estimator`` (compared by name)."""

    TD0 = "Bootstrapped TD (1-step return)"
    TD1 = "TD(1) (infinity-step return)"
    TDLambda = "TD(lambda)"
    GAE = "Generalized advantage estimate"
    MAGAE = "Multi-agent generalized advantage estimate"
    VTrace = "V-trace"

    def __eq__(self, other):
        if isinstance(other, Enum):
            return self.name == other.name
        return NotImplemented

    def __hash__(self):
        return hash(self.name)


# String aliases accepted by make_value_estimator (matched case-insensitively).
ALIASES = {"td0": ValueEstimators.TD0, "td1": ValueEstimators.TD1, "tdlambda": ValueEstimators.TDLambda,
           "td_lambda": ValueEstimators.TDLambda, "gae": ValueEstimators.GAE}


def default_value_kwargs(value_type: ValueEstimators) -> dict:
    """Hyperparameters of an estimator built by a loss (``differentiable`` is True there)."""
    if value_type == ValueEstimators.TD0 or value_type == ValueEstimators.TD1:
        return {"gamma": 0.99, "differentiable": True}
    if value_type == ValueEstimators.TDLambda or value_type == ValueEstimators.GAE:
        return {"gamma": 0.99, "lmbda": 0.95, "differentiable": True}
    raise NotImplementedError(f"Unknown value type {value_type}; rlexp supports TD0, TD1, TDLambda and GAE.")


# advantages ---------------------------------------------------------------------------------------
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
        raise ValueError(f"The advantage (shape={tuple(advantage.shape)}) and the log-weight "
                         f"(shape={tuple(log_weight.shape)}) would broadcast to {tuple(shape)}, turning the PPO "
                         "objective into an outer product over samples. This usually means the advantage is "
                         "missing its trailing value dimension: reshape it to batch shape + (1,) "
                         "(e.g. advantage.unsqueeze(-1)).")
    return advantage


# distributions: entropy and KL --------------------------------------------------------------------
# A composite distribution (tensordict's ``CompositeDistribution``: one distribution per action head)
# gives per-head terms as a tensordict; the joint term is their sum over heads and feature dims.
def sum_heads(x: torch.Tensor | TensorDictBase) -> torch.Tensor:
    """A tensor as is; a tensordict of per-head terms summed over its heads and their feature dims."""
    return x.sum(dim="feature", reduce=True) if is_tensor_collection(x) else x


def log_ratio(log_prob: torch.Tensor | TensorDictBase, other: torch.Tensor | TensorDictBase) -> torch.Tensor:
    """``log_prob - other`` of the joint action: per head, then summed (one side may be the joint already)."""
    if is_tensor_collection(log_prob) and is_tensor_collection(other):
        return sum_heads(log_prob - other)
    return sum_heads(log_prob) - sum_heads(other)


def _with_suffix(key: NestedKey, suffix: str) -> NestedKey:
    return key + suffix if isinstance(key, str) else (*key[:-1], key[-1] + suffix)


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


def entropy(dist: D.Distribution, samples_mc: int) -> torch.Tensor | TensorDictBase:
    """``dist.entropy()`` if available and finite, else ``-mean_S log p(x_s)`` over ``samples_mc`` draws.

    A composite distribution gives each head's entropy under ``<sample key>_entropy`` (a
    tensordict), or their sum when tensordict's ``composite_lp_aggregate()`` is on.
    """
    if isinstance(dist, CompositeDistribution):
        heads = TensorDict({_with_suffix(name, "_entropy"): entropy(head, samples_mc)
                            for name, head in dist.dists.items()}, dist.batch_shape)
        return sum_heads(heads) if composite_lp_aggregate() else heads
    try:
        value = dist.entropy()
    except NotImplementedError:
        value = None
    # Under vmap (several seeds in one process) the closed form is kept: a data-dependent branch cannot be batched.
    if value is None or (not is_batchedtensor(value) and not bool(torch.isfinite(value).all())):
        value = -_draw(dist, samples_mc)[1].mean(0)
    return value


def kl_divergence(prev: D.Distribution, cur: D.Distribution, samples_mc: int) -> torch.Tensor:
    """``KL(prev || cur)``: torch's registered closed form, else a Monte-Carlo mean over draws of ``prev``.

    Composite distributions take the Monte-Carlo path with the joint log-probs (summed over heads).
    """
    if isinstance(prev, CompositeDistribution):
        with set_composite_lp_aggregate(False):
            sample = prev.sample(torch.Size([samples_mc]))
            return (sum_heads(prev.log_prob(sample)) - sum_heads(cur.log_prob(sample))).mean(0)
    if type(prev) is type(cur) is D.Categorical and is_batchedtensor(prev.logits):
        # torch's closed form, without its boolean-mask writes (torch.func.vmap cannot batch them)
        t = prev.probs * (prev.logits - cur.logits)
        t = torch.where(cur.probs == 0, torch.inf, t)
        return torch.where(prev.probs == 0, 0.0, t).sum(-1)
    try:
        return D.kl_divergence(prev, cur)
    except NotImplementedError:
        sample = prev.sample(torch.Size([samples_mc]))
        return (prev.log_prob(sample) - cur.log_prob(sample)).mean(0)


# critic terms -------------------------------------------------------------------------------------
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


# reduction ----------------------------------------------------------------------------------------
REDUCTIONS = ("none", "mean", "sum")
AUTO_MASK_KEYS = (("collector", "mask"), "shifted_valid")


def find_loss_mask(tensordict: TensorDictBase, loss_mask_key: NestedKey | None) -> torch.Tensor | None:
    """The boolean mask of valid samples: ``"auto"`` ANDs every known mask key present, ``None`` disables."""
    if loss_mask_key is None:
        return None
    keys = AUTO_MASK_KEYS if loss_mask_key == "auto" else (loss_mask_key,)
    mask = None
    for key in keys:
        found = tensordict.get(key, None)
        if found is not None:
            mask = found.bool() if mask is None else mask & found.bool()
    return mask


def broadcast_mask(mask: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """``mask`` shaped like ``loss``: trailing singleton dims squeezed, then right-padded and expanded."""
    while mask.ndim > loss.ndim and mask.shape[-1] == 1:
        mask = mask.squeeze(-1)
    if mask.ndim > loss.ndim:
        raise ValueError(f"A mask of shape {tuple(mask.shape)} cannot be applied to a loss of shape "
                         f"{tuple(loss.shape)}: the mask has more non-singleton dimensions than the loss. "
                         "Per-element masking requires an elementwise loss, not one whose event dimensions have "
                         "already been reduced (e.g. a log-prob).")
    return mask.reshape(*mask.shape, *([1] * (loss.ndim - mask.ndim))).expand_as(loss)


def reduce_loss(loss: torch.Tensor, reduction: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce with ``"none"``/``"mean"``/``"sum"``; masked slots are selected away (NaN-safe) and
    a masked mean divides by ``max(mask.sum(), 1)``. The result is squeezed on its last dim."""
    if mask is not None:
        mask = broadcast_mask(mask, loss)
        loss = torch.where(mask, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
        if reduction == "mean":
            loss = loss.sum() / mask.sum().clamp_min(1)
        elif reduction == "sum":
            loss = loss.sum()
    elif reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.squeeze(-1) if loss.ndim else loss  # (vmap rejects squeeze(-1) of a 0-dim tensor)
