"""Run a tensordict module's networks on its tensors directly, without TensorDictModule's bookkeeping.

At RL batch sizes a TensorDictModule call costs several times its network: tensordict passes every
output through ``TensorDict.from_any`` besides its key handling. ``module_calls`` reads a module's
structure once (sequences of ``TensorDictModule``, ``GRUModule`` and
``ProbabilisticTensorDictModule``) and returns calls that read and write the same keys, with the same
numbers, in a dict or a TensorDict. It accepts a module only when every part of it is plain: no
forward hooks (``select_out_keys`` is one), every out key written (no ``"_"``, no selection), the
default in-place writing, key lookup and sampling. For any other module it returns None, and callers
use the module itself.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, MutableMapping

import torch
from torch import nn
from torch.nn.modules import module as torch_module
from tensordict import TensorDictBase
from tensordict.nn import (InteractionType, ProbabilisticTensorDictModule, ProbabilisticTensorDictSequential,
                           TensorDictModule, TensorDictModuleBase, TensorDictSequential)

from rlexp.modules.distributions import IndependentNormal, standard_normal
from rlexp.modules.gru import GRUModule

Data = MutableMapping  # a flat dict of tensors keyed by tensordict keys, or a TensorDict
Call = Callable[[Data, bool], None]  # (data, deterministic): writes the module's outputs into data


def module_calls(module: TensorDictModuleBase, *, step: bool) -> list[Call] | None:
    """Calls reproducing ``module``'s forward, or None if a part is not understood or not plain.

    ``step=True``: every element is one env step on a flat dict (a GRU steps once from the stored
    state). ``step=False``: the data is a TensorDict and a GRU runs its own forward (recurrent mode).
    """
    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks or not _plain(module):
        return None
    if isinstance(module, TensorDictSequential):
        if module.partial_tolerant or module.inplace not in (None, True) or not _samples(module):
            return None
        calls = [module_calls(sub, step=step) for sub in children(module)]
        return None if any(c is None for c in calls) else [call for sub in calls for call in sub]
    if isinstance(module, GRUModule):
        return [_gru_step(module) if step else lambda data, deterministic: module(data)]
    if isinstance(module, ProbabilisticTensorDictModule):
        return _sampler(module)
    if type(module) is TensorDictModule and module._kwargs is None and not module.method_kwargs \
            and module.method is None and module.inplace is True and not module.strict and not module._get_kwargs:
        return [_network(module)]
    return None


def _plain(module: TensorDictModuleBase) -> bool:
    """No hooks around the module's forward, and it writes every key it computes under its own name.

    ``select_out_keys`` narrows ``out_keys`` below ``out_keys_source`` (on a ``TensorDictModule`` by a
    forward hook, on a sequence by a flag); an out key ``"_"`` discards that output. A sampler's
    ``out_keys`` are its sample keys (``out_keys_source``) plus its log-prob key.
    """
    selected = not isinstance(module, ProbabilisticTensorDictModule) \
        and list(module.out_keys) != list(module.out_keys_source)
    return not module._forward_hooks and not module._forward_pre_hooks and not selected \
        and "_" not in module.out_keys


def _samples(module: TensorDictSequential) -> bool:
    """False for a probabilistic sequence that skips its sampler (its earlier modules write the sample)."""
    return not isinstance(module, ProbabilisticTensorDictSequential) or module._requires_sample \
        or not any(isinstance(sub, (ProbabilisticTensorDictModule, ProbabilisticTensorDictSequential))
                   for sub in children(module))


def children(module: TensorDictSequential) -> list[TensorDictModuleBase]:
    """The modules of a sequence in call order, whether it holds a ``ModuleList`` or a ``ModuleDict``."""
    return list(module.module.values() if isinstance(module.module, nn.ModuleDict) else module.module)


_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def cached_calls(module: TensorDictModuleBase) -> list[Call] | None:
    """``module_calls(module, step=False)``, worked out once per module.

    Under ``torch.compile`` they are worked out in the traced code instead: guards on a weak dictionary's
    entries break when an entry of another module is collected.
    """
    if torch.compiler.is_compiling():
        return module_calls(module, step=False)
    if module not in _cache:
        _cache[module] = module_calls(module, step=False)
    return _cache[module]


def call_module(module: TensorDictModuleBase, td: TensorDictBase) -> TensorDictBase:
    """``module(td)`` (outputs written into ``td``) through its tensor calls where it has them."""
    calls = cached_calls(module)
    if calls is None:
        return module(td)
    for call in calls:
        call(td, False)
    return td


def get_dist(actor: TensorDictModuleBase, td: TensorDictBase) -> torch.distributions.Distribution:
    """``actor.get_dist(td)``: its parameter modules write into ``td``, its last module builds the distribution."""
    if not isinstance(actor, ProbabilisticTensorDictSequential) or cached_calls(actor) is None:
        return actor.get_dist(td)
    *params, sampler = children(actor)
    for sub in params:
        call_module(sub, td)
    return sampler.get_dist(td)


def _network(module: TensorDictModule) -> Call:
    network, in_keys, out_keys = module.module, list(module.in_keys), list(module.out_keys)

    def call(data: Data, deterministic: bool) -> None:
        out = network(*(data[key] for key in in_keys))
        if isinstance(out, (dict, TensorDictBase)) and all(key in out for key in out_keys):
            out = tuple(out[key] for key in out_keys)  # a network returning its outputs by name
        out = out if isinstance(out, tuple) else (out,)
        if len(out) != len(out_keys):
            raise RuntimeError(f"{len(out)} outputs for the {len(out_keys)} out_keys {out_keys} of {module}")
        for key, value in zip(out_keys, out):
            data[key] = value
    return call


def _gru_step(module: GRUModule) -> Call:
    (x_key, hidden_key, init_key), (out_key, next_key) = module.in_keys, module.out_keys

    def call(data: Data, deterministic: bool) -> None:
        x = data[x_key]
        hidden = data.get(hidden_key)
        if hidden is None:
            hidden = x.new_zeros(len(x), *module._state_shape)
        data[out_key], data[next_key] = module.step(x, hidden, data[init_key].to(torch.bool))
    return call


def _sampler(module: ProbabilisticTensorDictModule) -> list[Call] | None:
    """Sample the module's distribution from its parameters; write the sample and its log-prob."""
    if len(module.dist_sample_keys) != 1 or module.num_samples is not None \
            or getattr(module, "_generator", None) is not None or getattr(module, "_generator_key", None) is not None:
        return None  # several samples, or a generator of its own: left to the module
    param_keys = list(zip(module.dist_keys, module.in_keys))
    (sample_key,) = module.dist_sample_keys
    log_prob_key = module.log_prob_key if module.return_log_prob else None
    if module.distribution_class is torch.distributions.Categorical and [k for k, _ in param_keys] == ["logits"]:
        return [_categorical(param_keys[0][1], sample_key, log_prob_key)]
    if module.distribution_class is IndependentNormal and [k for k, _ in param_keys] == ["loc", "scale"] \
            and not module.distribution_kwargs:
        return [_independent_normal(param_keys[0][1], param_keys[1][1], sample_key, log_prob_key)]

    def call(data: Data, deterministic: bool) -> None:
        params = {dist_key if isinstance(dist_key, str) else dist_key[-1]: data[key] for dist_key, key in param_keys}
        dist = module.distribution_class(**params, **module.distribution_kwargs)
        mode = InteractionType.DETERMINISTIC if deterministic else InteractionType.RANDOM
        data[sample_key] = sample = module._dist_sample(dist, interaction_type=mode)  # tensordict's own rule
        if log_prob_key is not None:
            data[log_prob_key] = dist.log_prob(sample)
    return [call]


def _categorical(logits_key, sample_key, log_prob_key) -> Call:
    """``Categorical(logits=...)`` without the distribution object, op for op: the same draw, mode and log-prob."""
    def call(data: Data, deterministic: bool) -> None:
        logits = data[logits_key]
        logits = logits - logits.logsumexp(-1, keepdim=True)
        probs = logits.softmax(-1)
        if deterministic:
            sample = probs.argmax(-1)
        else:
            sample = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, True).reshape(probs.shape[:-1])
        data[sample_key] = sample
        if log_prob_key is not None:
            data[log_prob_key] = logits.gather(-1, sample.unsqueeze(-1)).squeeze(-1)
    return call


def _independent_normal(loc_key, scale_key, sample_key, log_prob_key) -> Call:
    """``IndependentNormal(loc, scale)`` (one event dimension) without the distribution objects, op for op:
    the same draw (``standard_normal``, as ``_Normal`` draws), mean and summed log-prob."""
    log_sqrt_2pi = math.log(math.sqrt(2 * math.pi))

    def call(data: Data, deterministic: bool) -> None:
        loc, scale = torch.broadcast_tensors(data[loc_key], data[scale_key])
        sample = loc if deterministic else loc + standard_normal(loc.shape, loc) * scale
        data[sample_key] = sample
        if log_prob_key is not None:
            log_prob = -((sample - loc) ** 2) / (2 * scale**2) - scale.log() - log_sqrt_2pi
            data[log_prob_key] = log_prob.sum(-1)
    return call
