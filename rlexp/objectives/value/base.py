"""Shared machinery of the value estimators: key names, value-network calls, time and gamma handling."""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass, field, fields

import torch
from torch._C._functorch import is_batchedtensor
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase, composite_lp_aggregate
from tensordict.utils import NestedKey


def _default_log_prob_key() -> str:
    return "sample_log_prob" if composite_lp_aggregate() else "action_log_prob"


@contextlib.contextmanager
def _hold_out_params(module: torch.nn.Module):
    """Turn off ``requires_grad`` of ``module``'s parameters for the duration (gradients reach inputs only)."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _standardize(x: torch.Tensor, min_std: float) -> torch.Tensor:
    """``(x - mean) / max(unbiased std, min_std)`` over all elements."""
    return (x - x.mean()) / x.std().clamp_min(min_std)


def _nan_to_root(nxt: TensorDictBase, root: TensorDictBase) -> TensorDictBase:
    """``nxt`` with NaN entries of its float inputs replaced by the root input at the same place.

    A next observation that is absent (NaN) at a trajectory end would otherwise give ``V = NaN``,
    which ``(1 - terminated) * V`` does not remove (``0 * NaN = NaN``). At a terminal step the
    substitute is masked out; at a truncation it stands in for the missing observation.
    """
    for key, value in nxt.items(True, True):
        if value.is_floating_point():
            fallback = root.get(key, None)
            if fallback is not None and fallback.shape == value.shape:
                nan = torch.isnan(value)
                if is_batchedtensor(nan) or nan.any():  # under vmap the where always runs (same values)
                    nxt.set(key, torch.where(nan, fallback, value))
    return nxt


class EstimatorKeys:
    """Mixin: ``tensor_keys``/``set_keys`` over a nested ``_AcceptedKeys`` dataclass.

    Users define ``_AcceptedKeys``, store an instance as ``_tensor_keys`` and provide ``_set_in_keys``.
    """

    _tensor_keys: object

    @property
    def tensor_keys(self):
        return self._tensor_keys

    def set_keys(self, **kwargs) -> None:
        """Rename tensordict keys; unknown names raise ``KeyError``, ``None`` values ``ValueError``."""
        names = {f.name for f in fields(self._AcceptedKeys)}
        for name, value in kwargs.items():
            if value is None:
                raise ValueError("tensordict keys cannot be None")
            if not isinstance(value, (NestedKey, list)):
                raise ValueError(f"key name must be of type NestedKey (Union[str, Tuple[str]]) but got {type(value)}")
            if name not in names:
                raise KeyError(f"{name} is not an accepted tensordict key for advantages; {type(self).__name__} "
                               f"accepts {sorted(names)}.")
            self._check_key(name, value)
        for name, value in kwargs.items():
            setattr(self._tensor_keys, name, value)
        self._set_in_keys()

    def _check_key(self, name: str, value: NestedKey) -> None:
        """Reject a key name the estimator cannot use (hook; accepts everything here)."""


class ValueEstimatorBase(EstimatorKeys, TensorDictModuleBase, abc.ABC):
    """Reads rewards, flags and values from a rollout and writes ``advantage`` and ``value_target``.

    Subclasses implement ``_returns``/``_advantage`` on tensors with time at dim -2.
    ``bootstraps_after_one_reward``: the estimator reads one reward per step and bootstraps from the
    next value with ``gamma ** steps_to_next_obs``, so it takes the multi-step transform's n-step
    rewards as they are (TD(0)); estimators that sum rewards over steps would count them twice.
    """

    bootstraps_after_one_reward = False

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys (change them with ``set_keys``)."""

        advantage: NestedKey = "advantage"
        value_target: NestedKey = "value_target"
        value: NestedKey = "state_value"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        terminated: NestedKey = "terminated"
        steps_to_next_obs: NestedKey = "steps_to_next_obs"
        sample_log_prob: NestedKey = field(default_factory=_default_log_prob_key)

    default_keys = _AcceptedKeys
    value_network: TensorDictModuleBase | None

    def __init__(self, *, value_network: TensorDictModuleBase | None, differentiable: bool = False,
                 skip_existing: bool | None = None, time_dim: int | None = None,
                 advantage_key=None, value_target_key=None, value_key=None, device=None, shifted: bool = False):
        super().__init__()
        if not isinstance(shifted, bool):
            raise ValueError(f"shifted must be a boolean, got {shifted!r}.")
        if shifted:
            # torchrl's shifted=True reads V(s_{t+1}) off the next row of one value call over the
            # observations; rlexp always evaluates the "next" observations themselves, so the
            # option is refused rather than silently ignored.
            raise NotImplementedError(f"{type(self).__name__}(shifted=True) is not supported by rlexp: the value "
                                      "network always runs on the root and 'next' observations (shifted=False).")
        for name, value in (("advantage_key", advantage_key), ("value_target_key", value_target_key),
                            ("value_key", value_key)):
            if value is not None:
                raise RuntimeError(f"Setting '{name}' via constructor is deprecated, use "
                                   f".set_keys({name[:-len('_key')]}='some_key') instead.")
        if device is None and value_network is not None:
            device = next((p.device for p in value_network.parameters()), None)
        self._device = device
        # Stored outside the submodules so the loss that owns this estimator registers the
        # critic's parameters once.
        self.__dict__["value_network"] = value_network
        self.differentiable = differentiable
        self.skip_existing = bool(skip_existing)
        self.time_dim = time_dim
        self._tensor_keys = self._AcceptedKeys()
        self._set_in_keys()

    def _scalar_buffer(self, name: str, value) -> None:
        self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32, device=self._device).clone())

    # keys ----------------------------------------------------------------------------------------
    def _check_key(self, name: str, value: NestedKey) -> None:
        if name == "value" and self.value_network is not None and value not in self.value_network.out_keys:
            raise KeyError(f"value key '{value}' not found in value network out_keys {self.value_network.out_keys}")

    def _set_in_keys(self) -> None:
        keys = self._tensor_keys
        net_keys = list(self.value_network.in_keys) if self.value_network is not None else [keys.value]
        self.in_keys = (net_keys + [("next", keys.reward), ("next", keys.done), ("next", keys.terminated)]
                        + [("next", k) for k in net_keys])
        self.out_keys = [keys.advantage, keys.value_target]

    # forward pieces --------------------------------------------------------------------------------
    def _time_dim(self, tensordict: TensorDictBase, time_dim: int | None) -> int:
        if time_dim is None:
            time_dim = self.time_dim
        if time_dim is None:
            names = tensordict.names if tensordict._has_names() else ()
            time_dim = names.index("time") if "time" in names else tensordict.ndim - 1
        return time_dim + tensordict.ndim if time_dim < 0 else time_dim

    def _gamma(self, tensordict: TensorDictBase, reward: torch.Tensor) -> torch.Tensor:
        steps = tensordict.get(self._tensor_keys.steps_to_next_obs, None)
        if steps is None:
            return self.gamma
        return self.gamma ** steps.view_as(reward)

    def _flags(self, tensordict: TensorDictBase):
        done = tensordict["next", self._tensor_keys.done]
        terminated = tensordict.get(("next", self._tensor_keys.terminated), done)
        return done, terminated

    def _values(self, tensordict: TensorDictBase, params=None, target_params=None, *, required: type = KeyError):
        """``(V, V')``; runs the value network on root and ``"next"`` and writes both into ``tensordict``."""
        key = self._tensor_keys.value
        net = self.value_network
        if net is None or (self.skip_existing and key in tensordict.keys()
                           and ("next", key) in tensordict.keys(True)):
            value = tensordict.get(key, None)
            next_value = tensordict.get(("next", key), None)
            for missing, found in ((key, value), (("next", key), next_value)):
                if found is None:
                    raise required(f"The tensor with key {missing} is missing, and no value network was provided.")
            return value, next_value
        in_keys = list(net.in_keys)
        root = tensordict.select(*in_keys, strict=False)
        nxt = _nan_to_root(tensordict["next"].select(*in_keys, strict=False), root)
        if "is_init" in root.keys():
            is_init = root.get("is_init")
            nxt.set("is_init", nxt.get("is_init") | is_init if "is_init" in nxt.keys() else is_init)
        if params is not None:
            params = params.detach()
            target_params = params if target_params is None else target_params.detach()
        same_keys = set(root.keys(True, True)) == set(nxt.keys(True, True))
        if same_keys and (params is None or target_params is params):
            with self._with_params(net, params):
                value, next_value = net(torch.stack([root, nxt], 0))[key].unbind(0)
        else:
            with self._with_params(net, params):
                value = net(root)[key]
            with self._with_params(net, target_params):
                next_value = net(nxt)[key]
        tensordict.set(key, value)
        tensordict.set(("next", key), next_value)
        return value, next_value.detach()

    @staticmethod
    def _with_params(net, params):
        """Run ``net`` with ``params`` swapped in, or with its own parameters held out of autograd."""
        if params is not None:
            return params.to_module(net)
        return _hold_out_params(net) if torch.is_grad_enabled() else contextlib.nullcontext()

    def _check_batch(self, tensordict: TensorDictBase) -> None:
        if tensordict.batch_dims < 1:
            raise RuntimeError("Expected input tensordict to have at least one dimension (time), got "
                               f"tensordict.batch_size = {tensordict.batch_size}")

    def value_estimate(self, tensordict: TensorDictBase, **kwargs) -> torch.Tensor:
        """The value target only (the estimate of the return)."""
        return self(tensordict.copy(), **kwargs)[self._tensor_keys.value_target]

    def forward(self, tensordict: TensorDictBase, *, params=None, target_params=None, time_dim=None):
        """Write ``advantage`` and ``value_target`` into ``tensordict`` (in place) and return it."""
        self._check_batch(tensordict)
        keys = self._tensor_keys
        with torch.set_grad_enabled(self.differentiable):
            value, next_value = self._values(tensordict, params, target_params, required=self._missing_value_error)
            reward = tensordict["next", keys.reward]
            done, terminated = self._flags(tensordict)
            dim = self._time_dim(tensordict, time_dim)
            advantage, value_target = self._estimate(tensordict, value, next_value, reward, done, terminated, dim)
            tensordict.set(keys.advantage, advantage)
            tensordict.set(keys.value_target, value_target)
        return tensordict

    _missing_value_error: type = KeyError

    @abc.abstractmethod
    def _estimate(self, tensordict, value, next_value, reward, done, terminated, time_dim):
        """Return ``(advantage, value_target)`` with time at ``time_dim`` of the tensordict."""
