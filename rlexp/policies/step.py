"""A tensordict policy as a function of one env step's flat dict of tensors (the collector's hot path).

The policy's networks run on the step's tensors through :func:`rlexp.modules.tensor_calls.module_calls`,
which writes the keys and numbers the tensordict call would, without its per-call bookkeeping. The
first call is made both ways from the same RNG state; on any difference the policy warns once and is
called as a tensordict module from then on, as is a policy with parts the tensor path does not know.
"""

from __future__ import annotations

import warnings

import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, TensorDictModuleBase, set_interaction_type

from rlexp.envs import Step
from rlexp.modules.tensor_calls import module_calls


class PolicyStep:
    """``policy`` as ``(step, deterministic=False) -> step``, writing its outputs into ``step``.

    ``deterministic`` takes the distribution's deterministic sample (evaluation) instead of a random one.
    ``calls`` holds the tensor calls, or None once the policy is called as a tensordict module.
    """

    def __init__(self, policy: TensorDictModuleBase):
        self.policy = policy
        self.calls = module_calls(policy, step=True)
        self._checked = self.calls is None

    def __call__(self, step: Step, deterministic: bool = False) -> Step:
        if self.calls is None:
            return self._tensordict_call(step, deterministic)
        if not self._checked:
            return self._checked_call(step, deterministic)
        for call in self.calls:
            call(step, deterministic)
        return step

    def _checked_call(self, step: Step, deterministic: bool) -> Step:
        """The tensor calls on a copy of ``step``, then the policy's own call on ``step`` from the same RNG state.

        They must agree on every key and value and on the RNG state they leave behind (so later draws
        agree too); otherwise the tensor calls are dropped with one warning.
        """
        self._checked = True
        devices = sorted({v.device.index or 0 for v in step.values() if v.device.type == "cuda"})
        fast = dict(step)
        with torch.random.fork_rng(devices=devices):
            try:
                for call in self.calls:
                    call(fast, deterministic)
                difference, rng_after = None, _rng_states(devices)
            except Exception as err:  # a difference too; the module's own call below raises if the input is bad
                difference = f"the tensor path raised {err!r}"
        self._tensordict_call(step, deterministic)
        if difference is None:
            difference = _difference(fast, step) or (
                "they leave the random number generator in different states"
                if not all(torch.equal(a, b) for a, b in zip(rng_after, _rng_states(devices))) else None)
        if difference is not None:
            warnings.warn(f"Calling the policy {type(self.policy).__name__} as a tensordict module: its tensor "
                          f"path differs from its own call ({difference}).", RuntimeWarning, stacklevel=3)
            self.calls = None
        return step

    def _tensordict_call(self, step: Step, deterministic: bool) -> Step:
        td = TensorDict(batch_size=step["observation"].shape[:1])
        for key, value in step.items():
            td.set(key, value)
        with set_interaction_type(InteractionType.DETERMINISTIC if deterministic else InteractionType.RANDOM):
            td = self.policy(td)
        step.update(td.items(include_nested=True, leaves_only=True))
        return step


def _rng_states(cuda_devices: list[int]) -> list[torch.Tensor]:
    return [torch.get_rng_state(), *(torch.cuda.get_rng_state(device) for device in cuda_devices)]


def _difference(got: Step, expected: Step) -> str | None:
    """The first way two steps differ (keys, then dtype, shape or values of a key), or None if they are equal."""
    if set(got) != set(expected):
        return (f"keys only in the tensor path: {sorted(map(str, set(got) - set(expected)))}, "
                f"only in the module's call: {sorted(map(str, set(expected) - set(got)))}")
    for key, value in expected.items():
        other = got[key]
        if not isinstance(other, torch.Tensor) or (other.dtype, other.shape, other.device) != \
                (value.dtype, value.shape, value.device):
            return f"{key!r} is {_describe(other)} instead of {_describe(value)}"
        same_nan = value.is_floating_point() and bool(((other == value) | (other.isnan() & value.isnan())).all())
        if not torch.equal(other, value) and not same_nan:
            return f"the values of {key!r} differ"
    return None


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)} on {value.device}"
    return f"a {type(value).__name__}"
