"""``LossModule``: the base of every rlexp loss (torchrl 0.14's API on tensordict).

A loss reads a tensordict and returns a new one holding ``loss_*`` terms (summed and
backpropagated by the trainer) and other logged scalars. This module holds the key management,
coefficient buffers, the forward context, parameter handling and value-estimator construction.

Parameters: ``convert_to_functional`` keeps the *same* ``nn.Parameter`` objects, so gradients
land on the user's networks and ``loss.parameters()`` lists each parameter once. A module runs
directly when its stored params are its own; only detached or replaced params (e.g. the critic's
copy of parameters shared with the actor under ``separate_losses``) are swapped in with ``to_module``.
"""

from __future__ import annotations

import contextlib
import copy as copy_module
import functools
from dataclasses import dataclass, fields

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import InteractionType, TensorDictModuleBase, TensorDictParams, set_interaction_type
from tensordict.utils import NestedKey
from torch import nn

from rlexp.modules.recurrent_mode import set_recurrent_mode
from rlexp.objectives.utils import ALIASES, ValueEstimators, default_value_kwargs, find_loss_mask, reduce_loss
from rlexp.objectives.value import GAE, TD0Estimator, TD1Estimator, TDLambdaEstimator, ValueEstimatorBase

RANDOM_MODULE_LIST: tuple[type[nn.Module], ...] = (nn.modules.dropout._DropoutNd,)
VMAP_RANDOMNESS_MODES = ("error", "same", "different")
ESTIMATOR_CLASSES = {
    ValueEstimators.TD0: TD0Estimator,
    ValueEstimators.TD1: TD1Estimator,
    ValueEstimators.TDLambda: TDLambdaEstimator,
    ValueEstimators.GAE: GAE,
}
_PARAMS_SUFFIX = "_params"
_TARGET_PREFIX = "target_"


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


class LossModule(TensorDictModuleBase, metaclass=_LossModuleMeta):
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
    # rlexp trainer capability: buffers the forward updates (run state, such as an adaptive
    # coefficient), kept per seed when several seeds train in one process; other buffers are constants.
    per_run_buffers: tuple[str, ...] = ()
    # Buffers that accept a Python number by assignment (copied in place, keeping device and dtype).
    _schedulable_buffers: tuple[str, ...] = ()

    def __init__(self):
        super().__init__()
        self._tensor_keys = self._AcceptedKeys()
        self._value_estimator = None
        self.value_type = self.default_value_estimator
        self._vmap_randomness = None
        self.loss_mask_key = "auto"
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
                raise ValueError(f"{key} is not an accepted tensordict key. Accepted keys are: {sorted(names)}.")
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

    @property
    def loss_mask_key(self) -> NestedKey | None:
        """The input entry marking the samples that count: ``"auto"`` (every known mask key present),
        a nested key (that entry only; ``("auto",)`` names an entry called "auto"), or None (no mask)."""
        return self._loss_mask_key

    @loss_mask_key.setter
    def loss_mask_key(self, value: NestedKey | None) -> None:
        if value is not None and not isinstance(value, NestedKey):
            raise ValueError(f"loss_mask_key must be 'auto', None or a NestedKey, got {value!r}.")
        self._loss_mask_key = value

    # coefficient buffers -------------------------------------------------------------------------
    def register_coeff_buffer(self, name: str, value, *, device: torch.device | str | None = None,
                              dtype: torch.dtype | None = None) -> None:
        """Register ``value`` as a scalar buffer (``None`` sets a plain ``None`` attribute).

        The buffer is float32 unless ``dtype`` says otherwise, on ``device`` or the loss's device.
        """
        if value is None:
            setattr(self, name, None)
            return
        if isinstance(value, bool) or not isinstance(value, (float, int, torch.Tensor)) or (
                isinstance(value, torch.Tensor) and value.numel() != 1):
            raise ValueError(f"{name} must be a float or a scalar tensor, got {value}.")
        device = self._buffer_device() if device is None else device
        self.register_buffer(name, torch.as_tensor(value, dtype=dtype or torch.float32, device=device).clone()
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
        if name.endswith(_PARAMS_SUFFIX) and name[: -len(_PARAMS_SUFFIX)] in self.__dict__.get("_functional_names", ()):
            # Replaced parameters no longer live in the module: swap them in at call time.
            if hasattr(self, name):
                self._swapped_modules.add(name[: -len(_PARAMS_SUFFIX)])
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
            raise ValueError(f"Wrong vmap randomness, should be one of 'error', 'same' or 'different', got {value!r}.")
        self._vmap_randomness = value

    def _reduce_losses(self, tensordict: TensorDictBase, out: dict, reduction: str) -> dict:
        """Reduce every ``loss_*`` entry of ``out`` in place, masked by the input's loss mask."""
        mask = find_loss_mask(tensordict, self.loss_mask_key)
        for key, value in out.items():
            if key.startswith("loss_"):
                out[key] = reduce_loss(value, reduction, mask)
        return out

    # parameters -------------------------------------------------------------------------------------
    @property
    def functional(self) -> bool:
        """Whether the networks' parameters are held in ``<name>_params`` (True for the base class)."""
        return True

    def convert_to_functional(self, module: nn.Module, module_name: str, expand_dim: int | None = None,
                              create_target_params: bool = False, compare_against=None) -> None:
        """Store ``module`` under ``module_name`` and its parameters in ``<module_name>_params``.

        Parameters found in ``compare_against`` are stored detached (they get no gradient through
        this module); ``expand_dim`` stacks that many copies; ``create_target_params`` stores a
        detached clone as ``target_<module_name>_params`` (otherwise that name reads the live
        params, detached). A list of ``expand_dim`` modules of one architecture stacks their
        parameters (new leaves, so each copy trains on its own) and runs the first module.
        """
        against = {id(p) for p in compare_against} if compare_against is not None else set()
        swap = bool(expand_dim)
        if isinstance(module, (list, tuple)):
            if len(module) != expand_dim:
                raise RuntimeError("The ``expand_dim`` value must match the length of the module list/tuple "
                                   "if a single module isn't provided.")
            params = TensorDict.from_modules(*module, expand_identical=True)
            module = module[0]
        elif expand_dim:
            def expand(p):
                if id(p) in against:
                    return p.data.expand(expand_dim, *p.shape)
                return nn.Parameter(p.detach().expand(expand_dim, *p.shape).clone(), p.requires_grad) \
                    if isinstance(p, nn.Parameter) else p.expand(expand_dim, *p.shape).clone()
            params = TensorDict.from_module(module).apply(expand, batch_size=[expand_dim])
        else:
            params = TensorDict.from_module(module)
            if against:
                detached = params.apply(lambda p: p.data if id(p) in against else p)
                swap = any(a is not b for a, b in zip(detached.values(True, True), params.values(True, True)))
                params = detached
        self._functional_modules.add(module_name)
        if swap:
            self._swapped_modules.add(module_name)
        setattr(self, module_name + _PARAMS_SUFFIX, TensorDictParams(params, no_convert=True))
        # Kept out of ``_modules`` so its parameters are registered once, through the params above.
        self.__dict__[module_name] = module
        if create_target_params:
            target = getattr(self, module_name + _PARAMS_SUFFIX).data.clone()
            setattr(self, _TARGET_PREFIX + module_name + _PARAMS_SUFFIX, TensorDictParams(target, no_convert=True))

    @property
    def _functional_modules(self) -> set[str]:
        return self.__dict__.setdefault("_functional_names", set())

    @property
    def _swapped_modules(self) -> set[str]:
        return self.__dict__.setdefault("_swapped_names", set())

    def _params_of(self, module_name: str):
        """Context in which ``module_name`` runs with its stored params (a no-op when they are its own)."""
        if module_name in self._swapped_modules:
            return getattr(self, module_name + _PARAMS_SUFFIX).to_module(self.__dict__[module_name])
        return contextlib.nullcontext()

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith(_TARGET_PREFIX) and name.endswith(_PARAMS_SUFFIX):
                source = name[len(_TARGET_PREFIX):]
                if source[: -len(_PARAMS_SUFFIX)] in self.__dict__.get("_functional_names", ()):
                    return getattr(self, source).detach()
            raise

    def get_stateful_net(self, network_name: str, copy: bool | None = None) -> nn.Module:
        """The network holding the loss's stored parameter tensors themselves (not copies of their values).

        ``copy`` (the default) deep-copies the module structure first, so the user's module keeps
        its own attributes; either way the returned network's parameters *are* the stored ones,
        so initialising them in place initialises the loss. A non-functional loss returns its
        network as is.
        """
        module = getattr(self, network_name)
        if not self.functional:
            if copy:
                raise RuntimeError("Cannot copy module in non-functional mode.")
            return module
        if copy is None or copy:
            module = copy_module.deepcopy(module)
        getattr(self, network_name + _PARAMS_SUFFIX).to_module(module, preserve_module_state=False)
        return module

    def reset_parameters_recursive(self) -> None:
        """Re-initialise every functional network (``reset_parameters`` of each submodule) in place.

        The networks are kept out of ``_modules``, so the inherited walk would not reach them: each
        is reset with its stored parameters swapped in, then again with its target parameters if
        it has its own copy (the target gets fresh values of its own, not the new online ones).
        """
        for name, module in list(self.__dict__.items()):  # in the order the networks were stored
            if name not in self._functional_modules:
                continue
            for params_name in (name + _PARAMS_SUFFIX, _TARGET_PREFIX + name + _PARAMS_SUFFIX):
                params = self._modules.get(params_name)
                if params is not None:
                    with params.to_module(module, preserve_module_state=False):
                        module.reset_parameters_recursive()

    def from_stateful_net(self, network_name: str, stateful_net: nn.Module) -> None:
        """Copy the parameter values of ``stateful_net`` into the stored params (leaf sets must match)."""
        if not self.functional:
            getattr(self, network_name).load_state_dict(stateful_net.state_dict())
            return
        params = getattr(self, network_name + _PARAMS_SUFFIX)
        new = TensorDict.from_module(stateful_net)
        keys_new, keys_own = set(new.keys(True, True)), set(params.keys(True, True))
        if keys_new != keys_own:
            raise RuntimeError(f"The keys of params and provided module differ: {keys_own - keys_new} are in "
                               f"self.params and not in the module, {keys_new - keys_own} are in the module but "
                               "not in self.params.")
        with torch.no_grad():
            params.data.update_(new.data)

    # value estimator ----------------------------------------------------------------------------------
    @staticmethod
    def default_value_kwargs(value_type: ValueEstimators) -> dict:
        return default_value_kwargs(value_type)

    @property
    def value_estimator(self) -> ValueEstimatorBase:
        """The estimator; built on first access from ``default_value_estimator`` and its defaults."""
        if self._value_estimator is None:
            self.make_value_estimator(self.default_value_estimator)
        return self._value_estimator

    @value_estimator.setter
    def value_estimator(self, estimator: ValueEstimatorBase) -> None:
        self._value_estimator = estimator

    def _value_network(self):
        """The network the loss's own estimators evaluate (its critic, if any)."""
        return getattr(self, "critic_network", None)

    def make_value_estimator(self, value_type=None, **hyperparams) -> None:
        """Set the value estimator.

        ``value_type``: None (the default type), a ``ValueEstimators`` member or its string alias
        (``"gae"``, ``"td0"``, ``"td1"``, ``"tdlambda"``; built on the critic with the defaults of
        ``default_value_kwargs`` updated by ``hyperparams``), an estimator instance (used as is),
        or an estimator class (instantiated with ``hyperparams``). The loss's key names are then
        applied to the estimator.
        """
        if value_type is None:
            value_type = self.default_value_estimator
        if isinstance(value_type, ValueEstimatorBase):
            estimator = value_type
            value_type = type(estimator)
        elif isinstance(value_type, type) and issubclass(value_type, ValueEstimatorBase):
            devices = {p.device for p in self.parameters()}
            if len(devices) == 1 and "device" not in hyperparams:
                hyperparams["device"] = devices.pop()
            estimator = value_type(**hyperparams)
        else:
            if isinstance(value_type, str):
                if value_type.lower() not in ALIASES:
                    raise NotImplementedError(f"Unknown value type {value_type!r}; use one of {sorted(ALIASES)}.")
                value_type = ALIASES[value_type.lower()]
            if value_type not in ESTIMATOR_CLASSES:
                raise NotImplementedError(f"Value type {value_type} is not implemented for loss {type(self).__name__}; "
                                          "rlexp implements TD0, TD1, TDLambda and GAE.")
            kwargs = {**self.default_value_kwargs(value_type), **hyperparams}
            estimator = ESTIMATOR_CLASSES[value_type](value_network=self._value_network(), **kwargs)
        self._value_estimator = estimator
        self.value_type = value_type
        self._apply_keys_to_estimator(estimator)
