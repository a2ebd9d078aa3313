"""``LossModule``: the base of every rlexp loss (torchrl 0.14's API on tensordict).

A loss reads a tensordict and returns a new one holding ``loss_*`` terms (summed and
backpropagated by the trainer) and other logged scalars. This module holds the key management,
coefficient buffers and the forward context; parameter handling and value-estimator
construction live in ``functional_params`` and ``estimator_factory``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, fields

import torch
from tensordict import TensorDictBase
from tensordict.nn import InteractionType, TensorDictModuleBase, set_interaction_type
from tensordict.utils import NestedKey
from torch import nn

from rlexp.modules.recurrent_mode import set_recurrent_mode
from rlexp.objectives.estimator_factory import ValueEstimatorFactory
from rlexp.objectives.functional_params import FunctionalParams
from rlexp.objectives.reduction import find_loss_mask, reduce_loss

RANDOM_MODULE_LIST: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd,)
VMAP_RANDOMNESS_MODES = ("error", "same", "different")


def add_random_module(module: type[nn.Module]) -> None:
    """Mark a module class as random, so losses holding one report ``vmap_randomness == "different"``."""
    global RANDOM_MODULE_LIST
    RANDOM_MODULE_LIST = RANDOM_MODULE_LIST + (module,)


def _in_loss_context(fn):
    """Run ``fn`` with deterministic sampling and recurrent modules in recurrent mode."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        with set_interaction_type(self.deterministic_sampling_mode), set_recurrent_mode(True):
            return fn(self, *args, **kwargs)

    return wrapper


class _LossModuleMeta(type):
    """Wraps ``forward`` and every public method whose name ends in ``loss`` in the loss context."""

    def __new__(mcs, name, bases, attrs):
        for key, value in list(attrs.items()):
            if callable(value) and (key == "forward" or (key.endswith("loss") and not key.startswith("_"))):
                attrs[key] = _in_loss_context(value)
        return super().__new__(mcs, name, bases, attrs)


class LossModule(FunctionalParams, ValueEstimatorFactory, TensorDictModuleBase, metaclass=_LossModuleMeta):
    """Base class of RL losses: ``forward(tensordict) -> TensorDict`` of ``loss_*`` and logged scalars.

    Subclasses define a nested ``_AcceptedKeys`` dataclass (annotated fields = configurable keys)
    and point ``default_keys`` at it to allow ``set_keys(name=None)`` resets.
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable tensordict keys; subclasses add annotated fields."""

    default_value_estimator = None
    # rlexp trainer capability: the actor stays in eval mode while this loss trains it (GRPO: the
    # sampling policy and the one scored in the loss must be the same function, dropout included).
    actor_in_eval_mode = False
    deterministic_sampling_mode = InteractionType.DETERMINISTIC
    # Buffers that accept a Python number by assignment (copied in place, keeping device and dtype).
    _schedulable_buffers: tuple[str, ...] = ()

    def __init__(self):
        super().__init__()
        self._tensor_keys = self._AcceptedKeys()
        self._value_estimator = None
        self.value_type = self.default_value_estimator
        self._vmap_randomness = None
        self.loss_mask_key: NestedKey | None = "auto"
        self._in_keys = []
        self._out_keys = self._out_keys_apparent = []

    # keys ---------------------------------------------------------------------------------------
    @property
    def tensor_keys(self) -> _AcceptedKeys:
        return self._tensor_keys

    def set_keys(self, **kwargs) -> None:
        """Rename tensordict keys; ``None`` restores the default. Unknown names raise ``ValueError``."""
        names = {f.name for f in fields(self._AcceptedKeys)}
        for key, value in kwargs.items():
            if key not in names:
                raise ValueError(f"{key} is not an accepted tensordict key of {type(self).__name__}: {sorted(names)}")
            if value is None:
                value = getattr(self.default_keys(), key)  # AttributeError without default_keys, as torchrl
            setattr(self._tensor_keys, key, value)
        self._forward_value_estimator_keys(**kwargs)

    def _set_keys_from_actor(self, actor_network) -> None:
        """Set ``sample_log_prob``/``action`` from the actor (usually ``action_log_prob``/``action``)."""
        log_prob_keys = list(getattr(actor_network, "log_prob_keys", []))
        action_keys = list(getattr(actor_network, "dist_sample_keys", []))
        kwargs = {}
        if log_prob_keys:
            kwargs["sample_log_prob"] = log_prob_keys[0] if len(log_prob_keys) == 1 else log_prob_keys
        if action_keys:
            kwargs["action"] = action_keys[0] if len(action_keys) == 1 else action_keys
        self.set_keys(**kwargs)

    _estimator_key_names = ("advantage", "value_target", "value", "reward", "done", "terminated")

    def _forward_value_estimator_keys(self, **kwargs) -> None:
        """Pass key names on to an existing value estimator, then recompute ``in_keys``."""
        if self._value_estimator is not None:
            self._apply_keys_to_estimator(self._value_estimator)
        self._set_in_keys()

    def _apply_keys_to_estimator(self, estimator) -> None:
        keys = {name: getattr(self._tensor_keys, name) for name in self._estimator_key_names
                if hasattr(self._tensor_keys, name)}
        if keys:
            estimator.set_keys(**keys)

    def _set_in_keys(self) -> None:
        """Recompute ``in_keys`` from the current key names (losses override)."""

    # coefficient buffers -------------------------------------------------------------------------
    def register_coeff_buffer(self, name: str, value) -> None:
        """Register ``value`` as a float32 scalar buffer (``None`` sets a plain ``None`` attribute)."""
        if value is None:
            setattr(self, name, None)
            return
        if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.numel() != 1):
            raise ValueError(f"{name} must be a scalar number, got {value!r}.")
        self.register_buffer(name, torch.as_tensor(value, dtype=torch.float32, device=self._buffer_device()).clone()
                             .reshape(()))

    def _buffer_device(self) -> torch.device | None:
        return getattr(self, "_device", None)

    def __setattr__(self, name, value):
        prop = getattr(type(self), name, None)
        if isinstance(prop, property) and prop.fset is not None:
            # nn.Module would register a module value as a child instead of calling the setter.
            prop.fset(self, value)
            return
        if (name in self._schedulable_buffers and isinstance(value, (int, float)) and not isinstance(value, bool)
                and isinstance(self._buffers.get(name), torch.Tensor)):
            with torch.no_grad():
                self._buffers[name].fill_(value)
            return
        super().__setattr__(name, value)

    # misc API -------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Reset internal state (no-op except for losses with adaptive coefficients)."""

    @property
    def vmap_randomness(self) -> str:
        """``"different"`` if any held module is random (e.g. dropout), else ``"error"``."""
        if self._vmap_randomness is None:
            modules = [self, *(v for v in self.__dict__.values() if isinstance(v, nn.Module))]
            random = any(isinstance(m, RANDOM_MODULE_LIST) for mod in modules for m in mod.modules())
            self._vmap_randomness = "different" if random else "error"
        return self._vmap_randomness

    @vmap_randomness.setter
    def vmap_randomness(self, value: str) -> None:
        self.set_vmap_randomness(value)

    def set_vmap_randomness(self, value: str) -> None:
        if value not in VMAP_RANDOMNESS_MODES:
            raise ValueError(f"vmap_randomness must be one of {VMAP_RANDOMNESS_MODES}, got {value!r}.")
        self._vmap_randomness = value

    def _reduce_losses(self, tensordict: TensorDictBase, out: dict, reduction: str) -> dict:
        """Reduce every ``loss_*`` entry of ``out`` in place, masked by the input's loss mask (spec 1.4)."""
        mask = find_loss_mask(tensordict, self.loss_mask_key)
        for key, value in out.items():
            if key.startswith("loss_"):
                out[key] = reduce_loss(value, reduction, mask)
        return out
