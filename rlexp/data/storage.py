"""LazyTensorStorage: the fixed-capacity tensordict store behind ReplayBuffer."""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase


class LazyTensorStorage:
    """Fixed-capacity tensordict storage, allocated from the first data written.

    ``ndim=1`` keeps elements along one dimension, ``[max_size, ...]``. ``ndim=2`` keeps ``[B, T]``
    rollouts of B parallel envs **time-major**, ``[max_size // B, B, ...]``: one write of T steps
    fills T consecutive time slots of every env. Writes go round robin from ``cursor`` and overwrite
    the oldest slots once full. Memory is exactly the preallocated tensors: no per-element objects.
    """

    def __init__(self, max_size: int, *, ndim: int = 1, device: torch.device | str = "cpu"):
        if ndim not in (1, 2):
            raise ValueError(f"LazyTensorStorage supports ndim=1 or ndim=2, got {ndim}.")
        if int(max_size) < 1:
            raise ValueError(f"max_size must be >= 1, got {max_size}.")
        self.max_size = int(max_size)
        self.ndim = ndim
        self.device = torch.device(device)
        self._data: TensorDictBase | None = None
        self._keys: set = set()
        self.cursor = 0  # next (time) slot to write
        self.filled = 0  # number of (time) slots holding data

    @property
    def capacity(self) -> int:
        """Slots along the first storage dimension (time slots for ndim=2); 0 before allocation."""
        return 0 if self._data is None else self._data.batch_size[0]

    @property
    def shape(self) -> torch.Size:
        """Shape of the filled part in storage layout: ``[filled]`` or ``[filled, B]``."""
        if self._data is None:
            return torch.Size([0] * self.ndim)
        return torch.Size([self.filled, *self._data.batch_size[1: self.ndim]])

    def __len__(self) -> int:
        """Number of stored elements: filled slots, times B for ndim=2."""
        return self.shape.numel()

    def extend(self, data: TensorDictBase) -> torch.Tensor:
        """Write ``data`` (``[N, ...]``, or ``[B, T, ...]`` for ndim=2); return its storage indices.

        ndim=1 returns the N slots; ndim=2 returns ``[T*B, 2]`` ``(time_slot, env)`` pairs in
        time-major order. A write longer than the capacity keeps its newest part.
        """
        if data.batch_dims < self.ndim:
            raise ValueError(f"A storage with ndim={self.ndim} needs data with at least {self.ndim} batch dims, "
                             f"got batch size {tuple(data.batch_size)}.")
        if self.ndim == 2:
            data = data.transpose(0, 1)
        data = data.to(self.device)
        if self._data is None:
            self._allocate(data)
        self._check_layout(data)
        n = data.shape[0]
        slots = (self.cursor + torch.arange(n)) % self.capacity
        kept = min(n, self.capacity)
        self._data[slots[n - kept:]] = data[n - kept:]
        self.cursor = (self.cursor + n) % self.capacity
        self.filled = min(self.filled + n, self.capacity)
        if self.ndim == 1:
            return slots
        num_envs = data.shape[1]
        pairs = torch.stack([slots[:, None].expand(n, num_envs), torch.arange(num_envs).expand(n, num_envs)], -1)
        return pairs.reshape(-1, 2)

    def _allocate(self, data: TensorDictBase) -> None:
        capacity = self.max_size if self.ndim == 1 else self.max_size // data.shape[1]
        if capacity == 0:
            raise ValueError(f"max_size={self.max_size} cannot hold one time step of {data.shape[1]} envs.")
        self._data = data[0].new_zeros(capacity, *data.shape[1:])
        self._keys = set(data.keys(include_nested=True, leaves_only=True))

    def _check_layout(self, data: TensorDictBase) -> None:
        if data.shape[1:] != self._data.shape[1:]:
            raise ValueError(f"This storage holds elements of batch shape {tuple(self._data.shape[1:])} "
                             f"(storage layout); got {tuple(data.shape[1:])}.")
        keys = set(data.keys(include_nested=True, leaves_only=True))
        if keys != self._keys:
            raise ValueError(f"Written keys differ from the stored ones: missing "
                             f"{sorted(map(str, self._keys - keys))}, new {sorted(map(str, keys - self._keys))}.")

    def get(self, index) -> TensorDictBase:
        """Elements at a storage-layout index into the filled part.

        For ndim=2 a ``[N, 2]`` long tensor of ``(time_slot, env)`` pairs (as ``extend`` and the
        samplers return) selects N elements; any other index applies to the ``[filled, B]`` view.
        """
        if self._data is None or self.filled == 0:
            raise RuntimeError("The storage is empty.")
        view = self._data[: self.filled]
        if self.ndim == 2 and isinstance(index, torch.Tensor) and index.ndim == 2 and index.shape[1] == 2:
            return view[index[:, 0], index[:, 1]]
        return view[index]

    def __getitem__(self, index) -> TensorDictBase:
        """Index the filled storage as the user sees it.

        For ndim=2 the view is ``[B, filled]`` (env-major, slots in storage order, which after a
        wrap is not chronological); ``[N, 2]`` index pairs from ``extend`` select N elements.
        """
        if self.ndim == 1 or (isinstance(index, torch.Tensor) and index.ndim == 2 and index.shape[1] == 2):
            return self.get(index)
        return self.get(slice(None)).transpose(0, 1)[index]

    def empty(self) -> None:
        """Drop all data and the allocation; the next write allocates afresh."""
        self._data = None
        self._keys = set()
        self.cursor = 0
        self.filled = 0

    def state_dict(self) -> dict:
        """Contents and cursor as tensors and ints (loadable with ``torch.load(weights_only=True)``)."""
        return {"max_size": self.max_size, "ndim": self.ndim, "data": td_to_state(self._data),
                "cursor": self.cursor, "filled": self.filled}

    def load_state_dict(self, state: dict) -> None:
        """Restore from ``state_dict()``; the tensors are copied, so the source stays independent."""
        if (state["max_size"], state["ndim"]) != (self.max_size, self.ndim):
            raise ValueError(f"State of a storage with max_size={state['max_size']}, ndim={state['ndim']} cannot load "
                             f"into max_size={self.max_size}, ndim={self.ndim}.")
        if state["data"] is None:
            self.empty()
            return
        self._data = td_from_state(state["data"]).to(self.device)
        self._keys = set(self._data.keys(include_nested=True, leaves_only=True))
        self.cursor = state["cursor"]
        self.filled = state["filled"]


def td_to_state(td: TensorDictBase | None) -> dict | None:
    """A tensordict as plain nested dicts of tensors (``torch.load(weights_only=True)`` can read it)."""
    return None if td is None else {"tensors": td.to_dict(), "batch_size": list(td.batch_size)}


def td_from_state(state: dict | None) -> TensorDictBase | None:
    """Inverse of ``td_to_state``; copies the tensors so the state and the result stay independent."""
    return None if state is None else TensorDict(state["tensors"], batch_size=state["batch_size"]).clone()
