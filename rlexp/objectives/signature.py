"""Constructor signatures that list inherited keyword options (so the config registry can check them)."""

from __future__ import annotations

import inspect


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
