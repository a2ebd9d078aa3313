"""MultiStepTransform: n-step discounted rewards for replay buffers (torchrl 0.14 semantics)."""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase

from rlexp.data.storage import td_from_state, td_to_state


class MultiStepTransform:
    """Rewrites each frame to look ``n_steps`` ahead, within its episode, as data is written.

    An inverse transform: ``inv(data)`` (called by ``ReplayBuffer.extend``) takes ``[*B, T]`` data
    (time last), prepends the raw frames held back from the previous call and holds back the last
    ``n_steps`` frames, which lack their look-ahead; it returns the rewritten frames before them,
    or ``None`` if there are none yet. So frames straddling calls are rewritten as if the batches
    were one trajectory, and changing ``n_steps`` between calls neither drops nor repeats frames.

    Per frame t with ``c = min(n_steps, steps to the end of its episode in the window)``:
    ``("next", reward)`` becomes ``sum_j gamma**j reward[t+j]`` over j < c, the raw reward moves
    to ``("next", "original_reward")``, other ``"next"`` entries (except ``done_keys``, which stay
    one-step) come from step ``t + c - 1``, and root entries ``steps_to_next_obs = c``,
    ``gamma = gamma**c`` and ``nonterminal = (c != 1) & mask`` are added. Sampling is the identity.
    """

    def __init__(self, n_steps: int, gamma: float, *, reward_keys=None, done_key=None, done_keys=None,
                 mask_key=None):
        self.n_steps = n_steps
        self.gamma = float(gamma)
        self.reward_keys = ["reward"] if reward_keys is None else list(reward_keys)
        self.done_key = "done" if done_key is None else done_key
        self.done_keys = ["done", "truncated", "terminated"] if done_keys is None else list(done_keys)
        self.mask_key = "mask" if mask_key is None else mask_key
        self._buffer: TensorDictBase | None = None

    @property
    def n_steps(self) -> int:
        return self._n_steps

    @n_steps.setter
    def n_steps(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"The value of n_steps must be a strictly positive integer, got {value!r}.")
        self._n_steps = value

    def __call__(self, data: TensorDictBase) -> TensorDictBase:
        """Sampling side: the identity."""
        return data

    def inv(self, data: TensorDictBase) -> TensorDictBase | None:
        """Append ``data`` to the held-back frames; return the frames whose look-ahead is complete."""
        if data.batch_dims < 1:
            raise ValueError("MultiStepTransform needs data with a time dimension (the last batch dim).")
        window = data if self._buffer is None else torch.cat([self._buffer, data], dim=-1)
        n, length = self.n_steps, window.shape[-1]
        self._buffer = window[..., -n:].clone()
        if length <= n:
            return None
        return self._rewrite(window)[..., : length - n]

    def _rewrite(self, window: TensorDictBase) -> TensorDictBase:
        """The multi-step rewrite of a whole window (episodes also end at the window end)."""
        *batch, length = window.shape
        time_dim = len(batch)
        done = window.get(("next", self.done_key))
        if done.numel() != window.numel():
            raise ValueError(f"('next', {self.done_key!r}) of shape {tuple(done.shape)} does not hold one flag per "
                             f"step of the {tuple(window.shape)} data.")
        done = done.reshape(*batch, length)
        t = torch.arange(length, device=done.device)
        episode_end = torch.where(done, t, length - 1)
        episode_end = episode_end.flip(-1).cummin(-1).values.flip(-1)  # first end at or after t
        steps = (episode_end - t + 1).clamp(max=self.n_steps)  # c_t in 1..n

        out = window.copy()
        target = t + steps - 1
        moved = window.get("next").exclude(*self.reward_keys, *self.done_keys)
        out.get("next").update(moved.apply(lambda x: _gather_time(x, target, time_dim)))
        for key in self.reward_keys:
            reward = window.get(("next", key))
            out.set(("next", key), self._discounted_sum(reward, steps, time_dim))
            out.set(("next", "original_reward"), reward)
        out.set("steps_to_next_obs", steps)
        gamma = torch.full(steps.shape, self.gamma, dtype=torch.float64, device=steps.device)
        out.set("gamma", (gamma ** steps).to(torch.float32))
        nonterminal = steps != 1
        if self.mask_key in window.keys(include_nested=True):
            nonterminal &= window.get(self.mask_key).reshape(*batch, length).bool()
        out.set("nonterminal", nonterminal)
        return out

    def _discounted_sum(self, reward: torch.Tensor, steps: torch.Tensor, time_dim: int) -> torch.Tensor:
        """``sum_{j < steps[t]} gamma**j reward[t + j]`` along ``time_dim``."""
        length = reward.shape[time_dim]
        steps = steps.view(*steps.shape, *[1] * (reward.ndim - steps.ndim))
        total = torch.zeros_like(reward)
        for j in range(min(self.n_steps, length)):
            ahead = torch.cat([reward.narrow(time_dim, j, length - j), torch.zeros_like(reward.narrow(time_dim, 0, j))],
                              time_dim)
            weight = torch.tensor(self.gamma ** j, dtype=reward.dtype)
            total = total + torch.where(steps > j, weight * ahead, 0)
        return total

    def state_dict(self) -> dict:
        """``n_steps`` and the held-back raw frames, so a resumed run continues its windows."""
        return {"n_steps": self.n_steps, "buffer": td_to_state(self._buffer)}

    def load_state_dict(self, state: dict) -> None:
        self.n_steps = state["n_steps"]
        self._buffer = td_from_state(state["buffer"])


def _gather_time(x: torch.Tensor, target: torch.Tensor, time_dim: int) -> torch.Tensor:
    """``x`` with step t along ``time_dim`` replaced by step ``target[..., t]``."""
    index = target.view(*target.shape, *[1] * (x.ndim - target.ndim)).expand_as(x)
    return x.gather(time_dim, index)


def n_step_rollout(transform, rollout: TensorDict) -> TensorDict | None:
    """The multi-step transform's output, with ``("next", "terminated")`` of each window's last step.

    torchrl's transform keeps the one-step done flags, so a window that runs into a termination would
    bootstrap from the (never trained) value of the terminal observation. Carried as an ordinary
    ``"next"`` entry, the flag is moved to the window end like the next observation, which gives true
    n-step TD targets.
    """
    rollout["next", "window_terminated"] = rollout["next", "terminated"]
    rollout = transform.inv(rollout)
    if rollout is not None:
        rollout["next", "terminated"] = rollout["next"].pop("window_terminated")
    return rollout
