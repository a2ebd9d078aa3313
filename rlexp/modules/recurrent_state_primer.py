"""Zero recurrent states at episode starts: rlexp's stand-in for torchrl's ``TensorDictPrimer``.

rlexp has no env-transform stack, so ``GRUModule.make_tensordict_primer()`` returns this object and
the collector calls it: ``reset(root)`` on the tensordict of an env reset, ``carry(step, next_root)``
after every env step. Stored states are then zero at every ``is_init`` step, which is what makes a
rollout replayed in recurrent mode agree with the step-by-step pass that collected it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import NestedKey, TensorDictBase
from torch import Tensor


@dataclass(frozen=True)
class HiddenStateSpec:
    """Per-environment shape (``[L·dirs, H]``), dtype and device of one recurrent-state entry."""

    shape: torch.Size
    dtype: torch.dtype = torch.float32
    device: torch.device | None = None


class RecurrentStatePrimer:
    """Writes zero states under ``primers``' keys for the environments that start an episode.

    ``primers`` maps each state key to its :class:`HiddenStateSpec` (torchrl's ``.primers`` role).
    """

    def __init__(self, primers: dict[NestedKey, HiddenStateSpec], is_init_key: NestedKey = "is_init"):
        self.primers = primers
        self.is_init_key = is_init_key

    def reset(self, tensordict: TensorDictBase, mask: Tensor | None = None) -> TensorDictBase:
        """Zero the states where ``mask`` (``[*batch]`` or ``[*batch, 1]``) is True; keep the others.

        ``mask`` defaults to ``tensordict[is_init_key]``, or all True if that is absent. A missing
        state entry is created (zeros everywhere). Returns ``tensordict``, modified in place.
        """
        if mask is None:
            mask = tensordict.get(self.is_init_key, None)
        batch = tensordict.batch_size
        for key, spec in self.primers.items():
            current = tensordict.get(key, None)
            if current is None or mask is None:
                device = current.device if current is not None else (tensordict.device or spec.device)
                state = torch.zeros(*batch, *spec.shape, dtype=spec.dtype, device=device)
            else:
                starts = mask.to(device=current.device, dtype=torch.bool).reshape(*batch, *[1] * len(spec.shape))
                state = current.masked_fill(starts, 0)
            tensordict.set(key, state)
        return tensordict

    def carry(self, step: TensorDictBase, next_root: TensorDictBase) -> TensorDictBase:
        """Move each ``step["next", key]`` to ``next_root[key]``, then :meth:`reset` where ``next_root`` starts anew."""
        for key in self.primers:
            state = step.get(("next", *_as_tuple(key)), None)
            if state is not None:
                next_root.set(key, state)
        return self.reset(next_root)


def _as_tuple(key: NestedKey) -> tuple[str, ...]:
    return (key,) if isinstance(key, str) else tuple(key)
