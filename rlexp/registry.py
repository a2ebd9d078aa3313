"""Name -> builder registries, one per config group.

A config group file selects an entry with ``name:``; its other keys are the builder's keyword
arguments. Every entry, rlexp's own and users', is registered the same way, by decorating its
builder where it is defined; users list their modules under the top-level ``imports:`` config key::

    from rlexp.registry import losses

    @losses.register("my_loss")
    class MyLoss(LossModule): ...

A registry imports the package that defines its built-in entries on first use, so
``losses.get("clip_ppo")`` works in a fresh interpreter without importing ``rlexp.objectives`` first.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A configuration value that rlexp cannot use; the message names the valid choices."""


class Registry:
    """Maps names to builders (classes or functions) for one config group.

    ``builtins`` names the module whose import registers rlexp's own entries; it is imported before the
    registry is first read or written, so a user's entry can never shadow a built-in one unnoticed.
    """

    def __init__(self, group: str, builtins: str | None = None):
        self.group = group
        self._builtins: str | None = builtins
        self._builders: dict[str, Callable[..., Any]] = {}

    def _load_builtins(self) -> None:
        if self._builtins is not None:
            # While the module is being imported its own registrations come back here and find it in
            # sys.modules, so this does not recurse.
            importlib.import_module(self._builtins)
            self._builtins = None

    def register(self, name: str, builder: Callable[..., Any] | None = None):
        """Register ``builder`` under ``name``; usable as a decorator when ``builder`` is omitted."""

        def add(fn: Callable[..., Any]) -> Callable[..., Any]:
            self._load_builtins()
            if name in self._builders and self._builders[name] is not fn:
                raise ConfigError(f"{self.group} '{name}' is already registered to {self._builders[name]!r}")
            self._builders[name] = fn
            return fn

        return add if builder is None else add(builder)

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._builders)

    def __contains__(self, name: str) -> bool:
        self._load_builtins()
        return name in self._builders

    def get(self, name: str) -> Callable[..., Any]:
        self._load_builtins()
        if name not in self._builders:
            raise ConfigError(
                f"Unknown {self.group} '{name}'. Registered {self.group} entries: {', '.join(self.names())}. "
                f"Register your own with rlexp.registry.{self.group}.register and list its module under `imports:`."
            )
        return self._builders[name]

    def build(self, config: Mapping[str, Any], *args: Any, **extra: Any) -> Any:
        """Build the entry ``config["name"]`` with the other config keys as keyword arguments.

        ``args`` and ``extra`` are what the trainer supplies (networks, env specs); they are not
        config keys, and a config key that the builder does not accept fails with the accepted ones.
        """
        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
        config = dict(config)
        if "name" not in config:
            raise ConfigError(f"The {self.group} config has no `name:`; choose one of: {', '.join(self.names())}.")
        name = config.pop("name")
        builder = self.get(name)
        check_kwargs(f"{self.group} '{name}'", builder, config, supplied=len(args), supplied_names=extra)
        try:
            inspect.signature(builder).bind(*args, **extra, **config)
        except TypeError as err:  # a required option is missing
            raise ConfigError(f"{self.group} '{name}': {err}; its config gives {config}.") from None
        try:
            return builder(*args, **extra, **config)
        except ConfigError:
            raise
        except (ValueError, TypeError, NotImplementedError) as err:
            if not rejected_argument(err):
                raise  # a bug inside the builder: its traceback is what its author needs
            raise ConfigError(f"{self.group} '{name}' rejected its options {config}: {err}") from err


def rejected_argument(err: BaseException) -> bool:
    """True if ``err`` comes from a ``raise`` statement: a builder that validates its arguments rejects a bad
    value that way, while a bug (``None + 1``, a wrong call) is raised by the interpreter or by C code."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and (frames[-1].line or "").lstrip().startswith("raise")


def check_kwargs(what: str, builder: Callable[..., Any], kwargs: Mapping[str, Any], *, supplied: int = 0,
                 supplied_names: Mapping[str, Any] = ()) -> None:
    """Raise ConfigError if ``builder`` does not take every key of ``kwargs`` by keyword."""
    params = list(inspect.signature(builder).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return
    accepted = [
        p.name for i, p in enumerate(params)
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and i >= supplied and p.name not in supplied_names
    ]
    unknown = [k for k in kwargs if k not in accepted]
    if unknown:
        close = [match for key in unknown for match in difflib.get_close_matches(key, accepted, n=1)]
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(
            f"{what} got unknown option(s) {', '.join(map(repr, unknown))}.{hint} "
            f"Accepted options: {', '.join(accepted) or '(none)'}."
        )


envs = Registry("envs", builtins="rlexp.envs")
policies = Registry("policies", builtins="rlexp.policies")
losses = Registry("losses", builtins="rlexp.objectives")
value_estimators = Registry("value_estimators", builtins="rlexp.objectives.value")
replay_transforms = Registry("replay_transforms", builtins="rlexp.data")
loggers = Registry("loggers", builtins="rlexp.loggers")
