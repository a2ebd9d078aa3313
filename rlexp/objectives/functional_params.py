"""Parameter handling of losses: modules stored beside a ``TensorDictParams`` of their parameters.

``convert_to_functional`` keeps the *same* ``nn.Parameter`` objects, so gradients land on the
user's networks and ``loss.parameters()`` lists each parameter once. A module runs directly
when its stored params are its own; only detached or replaced params (e.g. the critic's copy of
parameters shared with the actor under ``separate_losses``) are swapped in with ``to_module``.
"""

from __future__ import annotations

import contextlib
import copy as copy_module

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictParams
from torch import nn

_PARAMS_SUFFIX = "_params"
_TARGET_PREFIX = "target_"


class FunctionalParams:
    """Mixin for ``LossModule``: ``convert_to_functional``, ``get_stateful_net``, ``from_stateful_net``."""

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
        params, detached).
        """
        params = TensorDict.from_module(module)
        against = {id(p) for p in compare_against} if compare_against is not None else set()
        swap = bool(expand_dim)
        if expand_dim:
            def expand(p):
                if id(p) in against:
                    return p.data.expand(expand_dim, *p.shape)
                return nn.Parameter(p.detach().expand(expand_dim, *p.shape).clone(), p.requires_grad) \
                    if isinstance(p, nn.Parameter) else p.expand(expand_dim, *p.shape).clone()
            params = params.apply(expand, batch_size=[expand_dim])
        elif against:
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

    def __setattr__(self, name: str, value) -> None:
        if name.endswith(_PARAMS_SUFFIX) and name[: -len(_PARAMS_SUFFIX)] in self.__dict__.get("_functional_names", ()):
            # Replaced parameters no longer live in the module: swap them in at call time.
            if hasattr(self, name):
                self._swapped_modules.add(name[: -len(_PARAMS_SUFFIX)])
        super().__setattr__(name, value)

    def get_stateful_net(self, network_name: str, copy: bool | None = None) -> nn.Module:
        """The network with its stored parameters loaded: a deep copy by default, or the stored module."""
        module = getattr(self, network_name)
        if not self.functional:
            if copy:
                raise RuntimeError("Cannot copy the module of a non-functional loss.")
            return module
        if copy is None or copy:
            module = copy_module.deepcopy(module)
            with torch.no_grad():
                TensorDict.from_module(module).update_(getattr(self, network_name + _PARAMS_SUFFIX).data)
        return module

    def from_stateful_net(self, network_name: str, stateful_net: nn.Module) -> None:
        """Copy the parameter values of ``stateful_net`` into the stored params (leaf sets must match)."""
        if not self.functional:
            getattr(self, network_name).load_state_dict(stateful_net.state_dict())
            return
        params = getattr(self, network_name + _PARAMS_SUFFIX)
        new = TensorDict.from_module(stateful_net)
        if set(new.keys(True, True)) != set(params.keys(True, True)):
            raise RuntimeError(f"The parameters of the given network do not match those of {network_name}.")
        with torch.no_grad():
            params.data.update_(new.data)
