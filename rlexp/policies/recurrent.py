"""Recurrent state of a policy, as the collector and the trainer see it.

``RecurrentStates(module)`` finds every :class:`GRUModule` inside a tensordict module and holds
their primers: the collector zeroes the states on env resets and carries ``("next", state)`` to
the next step. For a feed-forward policy it holds nothing and costs nothing.
"""

from __future__ import annotations

import torch
from tensordict.nn import TensorDictModuleBase, TensorDictSequential
from torch import nn

from rlexp.envs import Step
from rlexp.modules import GRUModule, RecurrentStatePrimer


def gru_modules(*modules: nn.Module | None) -> list[GRUModule]:
    """Every distinct ``GRUModule`` inside ``modules`` (``None`` entries are skipped)."""
    found: dict[int, GRUModule] = {}
    for module in modules:
        for sub in module.modules() if module is not None else ():
            if isinstance(sub, GRUModule):
                found.setdefault(id(sub), sub)
    return list(found.values())


class RecurrentStates:
    """The primers of every GRU in ``modules``; falsy when there is none."""

    def __init__(self, *modules: nn.Module | None):
        self.primers: list[RecurrentStatePrimer] = [gru.make_tensordict_primer() for gru in gru_modules(*modules)]

    def __bool__(self) -> bool:
        return bool(self.primers)

    def reset(self, root: Step) -> Step:
        """Zero the states of the envs that start an episode (``is_init``) in an env's root step."""
        for primer in self.primers:
            starts = root[primer.is_init_key].to(torch.bool)
            for key, spec in primer.primers.items():
                current = root.get(key)
                if current is None:
                    root[key] = torch.zeros(len(starts), *spec.shape, dtype=spec.dtype, device=spec.device)
                else:
                    root[key] = current.masked_fill(starts.to(current.device).reshape(-1, *[1] * len(spec.shape)), 0)
        return root

    def carry(self, step: Step, next_root: Step) -> Step:
        """Move each ``step["next", state]`` to ``next_root[state]``, zeroed where ``next_root`` starts anew."""
        for primer in self.primers:
            for key in primer.primers:
                state = step.get(("next", *((key,) if isinstance(key, str) else key)))
                if state is not None:
                    next_root[key] = state
        return self.reset(next_root)


def rollout_policy(actor: TensorDictModuleBase, critic: TensorDictModuleBase | None) -> TensorDictModuleBase:
    """The module the collector steps: the actor, followed by the critic's own GRUs if it has any.

    Stepping them during collection stores the critic's hidden states in the rollout, so value
    estimation and the critic loss can start each sequence from them. Only the GRUs run when
    their inputs are the actor's inputs or outputs (the value head is not needed there);
    otherwise the whole critic runs.
    """
    own = {id(gru) for gru in gru_modules(actor)}
    extra = [gru for gru in gru_modules(critic) if id(gru) not in own]
    if not extra:
        return actor
    available = {*actor.in_keys, *actor.out_keys}
    if all(gru.in_keys[0] in available for gru in extra):
        return TensorDictSequential(actor, *extra)
    return TensorDictSequential(actor, critic)
