"""Replay-buffer samplers: which stored elements a ``sample()`` call returns.

A sampler's ``sample(storage, batch_size)`` returns ``(index, info)``: ``index`` is in storage
layout (``[bs]`` slots for ndim=1, ``[bs, 2]`` ``(time_slot, env)`` pairs for ndim=2, the format
``LazyTensorStorage.extend`` returns) and ``info`` a dict that may carry an ``"updates"``
tensordict the buffer writes into the sample. ``ran_out`` tells ``ReplayBuffer.__iter__`` that an
epoch is complete.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict

from rlexp.data.storage import LazyTensorStorage


def _check_not_empty(storage: LazyTensorStorage) -> None:
    if len(storage) == 0:
        raise RuntimeError("Cannot sample from an empty storage.")


def _flat_to_storage_index(flat: torch.Tensor, storage: LazyTensorStorage) -> torch.Tensor:
    """Map flat positions in the ``[filled(, B)]`` storage layout to a storage index."""
    if storage.ndim == 1:
        return flat
    num_envs = storage.shape[1]
    return torch.stack([flat // num_envs, flat % num_envs], -1)


class RandomSampler:
    """Uniform sampling with replacement from the global torch RNG (torchrl's draw order)."""

    ran_out = False

    def sample(self, storage: LazyTensorStorage, batch_size: int) -> tuple[torch.Tensor, dict]:
        _check_not_empty(storage)
        if storage.ndim == 1:
            index = torch.randint(0, len(storage), (batch_size,))
        else:
            filled, num_envs = storage.shape
            slots = torch.randint(filled, (batch_size,))
            envs = torch.randint(num_envs, (batch_size,))
            index = torch.stack([slots, envs], -1)
        return index, {}

    def empty(self) -> None:
        """Stateless: nothing to reset."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Stateless: nothing to restore."""


class SamplerWithoutReplacement:
    """Minibatches that visit every stored element once per epoch, as PPO epochs use.

    An epoch is a permutation of the stored elements (``arange`` if ``shuffle=False``) consumed
    ``batch_size`` at a time. Its last batch is smaller unless ``drop_last``, which skips the
    remainder. A new epoch starts when the previous one ran out or the number of stored elements
    changed.
    """

    def __init__(self, drop_last: bool = False, shuffle: bool = True):
        self.drop_last = drop_last
        self.shuffle = shuffle
        self.ran_out = False
        self._remaining: torch.Tensor | None = None
        self._epoch_len = 0

    def sample(self, storage: LazyTensorStorage, batch_size: int) -> tuple[torch.Tensor, dict]:
        _check_not_empty(storage)
        n = len(storage)
        if self.drop_last and batch_size > n:
            raise ValueError(f"The batch size ({batch_size}) is greater than the storage capacity ({n}). This makes "
                             "it impossible to return a sample without repeating indices. Consider changing the "
                             "sampler class or turn the 'drop_last' argument to False.")
        if self._remaining is None or self._remaining.numel() == 0 or self._epoch_len != n or \
                (self.drop_last and self._remaining.numel() < batch_size):
            self._remaining = torch.randperm(n) if self.shuffle else torch.arange(n)
            self._epoch_len = n
        flat, self._remaining = self._remaining[:batch_size], self._remaining[batch_size:]
        left = self._remaining.numel()
        self.ran_out = left == 0 or (self.drop_last and left < batch_size)
        return _flat_to_storage_index(flat, storage), {}

    def empty(self) -> None:
        """Forget the current epoch."""
        self._remaining, self._epoch_len, self.ran_out = None, 0, False

    def state_dict(self) -> dict:
        return {"remaining": self._remaining, "epoch_len": self._epoch_len, "ran_out": self.ran_out}

    def load_state_dict(self, state: dict) -> None:
        remaining = state["remaining"]
        self._remaining = None if remaining is None else remaining.clone()
        self._epoch_len, self.ran_out = state["epoch_len"], state["ran_out"]


class SliceSampler:
    """Contiguous time slices, each within one trajectory of one env, for recurrent policies.

    A batch of ``batch_size`` elements is ``num_slices`` slices of ``slice_len`` consecutive steps
    (give one of the two; the other is ``batch_size //`` it), returned flat, slice after slice, so
    ``sample.reshape(num_slices, slice_len)`` recovers them. Trajectories are split at
    ``end_key`` flags (default ``("next", "done")``; or where ``traj_key`` ids change), at env
    rows (ndim=2), and where storage order stops being chronological (the newest written slot and
    the physical end of the storage). A trajectory is drawn uniformly, then a start uniformly
    within it. With ``strict_length=True`` trajectories shorter than ``slice_len`` are never
    drawn; otherwise their slice is the whole trajectory, the batch is shorter, and
    ``info["slice_lengths"]`` gives each slice's length.

    If ``truncated_key`` is set, the last step of each slice that does not end its episode (stored
    ``done`` False) gets ``truncated_key`` and its sibling ``"done"`` set in the sample, so value
    estimators bootstrap there instead of propagating across the cut; other flags stay as stored.
    """

    ran_out = False

    def __init__(self, *, num_slices: int | None = None, slice_len: int | None = None, end_key=None,
                 traj_key=None, strict_length: bool = True, truncated_key=("next", "truncated")):
        if (num_slices is None) == (slice_len is None):
            raise TypeError("Either num_slices or slice_len must be not None, and not both. "
                            f"Got num_slices={num_slices} and slice_len={slice_len}.")
        self.num_slices, self.slice_len = num_slices, slice_len
        self.end_key = ("next", "done") if end_key is None else end_key
        self.traj_key = traj_key
        self.strict_length = strict_length
        self.truncated_key = truncated_key

    def _shape(self, batch_size: int) -> tuple[int, int]:
        given = self.num_slices if self.num_slices is not None else self.slice_len
        if given < 1 or batch_size % given:
            what = ("number of slices", "num_slices") if self.num_slices is not None else ("slice length", "slice_len")
            raise RuntimeError(f"The batch-size must be divisible by the {what[0]}, got batch_size={batch_size} and "
                               f"{what[1]}={given}.")
        other = batch_size // given
        return (given, other) if self.num_slices is not None else (other, given)

    def _trajectory_ends(self, storage: LazyTensorStorage) -> torch.Tensor:
        """``[rows, filled]`` bool: True at the last slot of every trajectory (rows = envs, or 1)."""
        view = storage.get(slice(None))
        filled = view.shape[0]
        if self.traj_key is not None:
            ids = view.get(self.traj_key).reshape(*view.shape[: storage.ndim], -1)
            ends = torch.ones(view.shape[: storage.ndim], dtype=torch.bool)
            ends[:-1] = (ids[1:] != ids[:-1]).any(-1)
        else:
            ends = view.get(self.end_key).reshape(*view.shape[: storage.ndim], -1).any(-1)
        ends = ends.reshape(filled, -1).T.clone()  # [rows, filled]
        ends[:, -1] = True
        ends[:, (storage.cursor - 1) % storage.capacity] = True
        return ends

    def sample(self, storage: LazyTensorStorage, batch_size: int) -> tuple[torch.Tensor, dict]:
        _check_not_empty(storage)
        num_slices, slice_len = self._shape(batch_size)
        ends = self._trajectory_ends(storage)
        row, stop = ends.nonzero(as_tuple=True)  # row-major: trajectories in order within each row
        first = torch.ones_like(stop, dtype=torch.bool)
        first[1:] = row[1:] != row[:-1]
        start = torch.where(first, 0, torch.cat([stop.new_zeros(1), stop[:-1] + 1]))
        length = stop - start + 1
        eligible = length >= slice_len if self.strict_length else torch.ones_like(length, dtype=torch.bool)
        if not eligible.any():
            raise RuntimeError(f"Did not find a single trajectory with sufficient length (length range: "
                               f"{int(length.min())} - {int(length.max())} / required={slice_len}).")
        row, start, length = row[eligible], start[eligible], length[eligible]
        traj = torch.randint(row.numel(), (num_slices,))
        room = (length[traj] - slice_len + 1).clamp_min(1)
        offset = (torch.rand(num_slices) * room).floor().long()
        slot_start = start[traj] + offset
        slice_lengths = torch.minimum(length[traj], torch.full_like(length[traj], slice_len))
        steps = torch.arange(slice_len)
        valid = steps < slice_lengths[:, None]  # [num_slices, slice_len]
        slots = (slot_start[:, None] + steps)[valid]
        slice_rows = row[traj][:, None].expand(-1, slice_len)[valid]
        index = slots if storage.ndim == 1 else torch.stack([slots, slice_rows], -1)
        info = {"slice_lengths": slice_lengths}
        if self.truncated_key is not None:
            info["updates"] = self._cut_flags(storage, slots, slice_rows, slice_lengths)
        return index, info

    def _cut_flags(self, storage, slots, slice_rows, slice_lengths) -> TensorDict:
        """Stored truncated/done flags, set at each slice's last step unless the episode ends there."""
        last = torch.zeros(slots.numel(), dtype=torch.bool)
        last[slice_lengths.cumsum(0) - 1] = True
        done_key = (*self.truncated_key[:-1], "done") if isinstance(self.truncated_key, tuple) else "done"
        view = storage.get(slice(None))
        stored = {}
        for key in (self.truncated_key, done_key):
            flag = view.get(key, None)
            if flag is None:
                stored[key] = torch.zeros(slots.numel(), 1, dtype=torch.bool)
            else:
                stored[key] = flag[slots] if storage.ndim == 1 else flag[slots, slice_rows]
        cut = last.view(-1, *[1] * (stored[done_key].ndim - 1)) & ~stored[done_key]
        return TensorDict({self.truncated_key: stored[self.truncated_key] | cut, done_key: stored[done_key] | cut},
                          batch_size=[slots.numel()])

    def empty(self) -> None:
        """Stateless: trajectories are recomputed from the storage on every call."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Stateless: nothing to restore."""
