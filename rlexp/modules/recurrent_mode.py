"""The recurrent-mode switch read by recurrent modules (torchrl's ``set_recurrent_mode``).

Context-local: each thread and asyncio task sees its own innermost setting. Every loss forward
runs in recurrent mode, so a GRU inside a loss processes whole sequences.
"""

from __future__ import annotations

import contextlib
import contextvars

_MODE: contextvars.ContextVar[bool | None] = contextvars.ContextVar("rlexp_recurrent_mode", default=None)
_ALIASES = {"recurrent": True, "sequential": False}


def recurrent_mode() -> bool | None:
    """The mode set by the innermost ``set_recurrent_mode``, or None outside any."""
    return _MODE.get()


class set_recurrent_mode(contextlib.ContextDecorator):
    """Context manager and decorator: ``True``/``"recurrent"`` or ``False``/``"sequential"``."""

    def __init__(self, mode: bool | str = True):
        if isinstance(mode, str):
            if mode not in _ALIASES:
                raise ValueError(f"Unknown recurrent mode {mode!r}; use True, False, 'recurrent' or 'sequential'.")
            mode = _ALIASES[mode]
        self.mode = bool(mode)
        self._tokens: list[contextvars.Token] = []

    def __enter__(self) -> "set_recurrent_mode":
        self._tokens.append(_MODE.set(self.mode))
        return self

    def __exit__(self, *exc) -> None:
        _MODE.reset(self._tokens.pop())
