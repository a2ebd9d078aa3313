"""LazyTensorStorage: the fixed-capacity tensordict store behind ReplayBuffer."""

from __future__ import annotations

import torch
from tensordict import TensorDict, TensorDictBase


class LazyTensorStorage:
    """Fixed-capacity tensordict storage, allocated from the first data written.

    ``ndim=1`` stores elements along one dimension, ``[max_size, ...]``. ``ndim=2`` stores ``[B, T]``
    rollouts of B parallel envs **time-major** as ``[max_size // B, B, ...]``: one write of T steps
    fills T consecutive time slots of every env. Writes go round robin from ``cursor`` and overwrite
    the oldest slots once the storage is full.
    """

    def __init__(self, max_size: int, *, ndim: int = 1, device: torch.device | str = "cpu"):
        if ndim not in (1, 2):
            raise ValueError(f"LazyTensorStorage supports ndim=1 or ndim=2, got {ndim}.")
        self.max_size = int(max_size)
        self.ndim = ndim
        self.device = torch.device(device)
        self._data: TensorDictBase | None = None
        self.cursor = 0
        self.filled = 0

    @property
    def shape(self) -> torch.Size:
        """Allocated storage shape: ``[capacity]`` or ``[capacity, B]``."""
        if self._data is None:
            raise RuntimeError("The storage holds no data yet.")
        return self._data.batch_size[: self.ndim]

    @property
    def capacity(self) -> int:
        """Number of slots along the first (time, for ndim=2) storage dimension."""
        return self.shape[0]

    def __len__(self) -> int:
        """Number of stored elements: filled slots, times B for ndim=2."""
        return 0 if self._data is None else self.filled * self.shape[1:].numel()

    def extend(self, data: TensorDictBase) -> torch.Tensor:
        """Write ``data`` (``[N, ...]``, or ``[B, T, ...]`` for ndim=2) and return its storage indices.

        ndim=1 returns the N slots; ndim=2 returns ``[T*B, 2]`` ``(time_slot, env)`` pairs in
        time-major order.
        """
        if data.batch_dims < self.ndim:
            raise ValueError(f"A storage with ndim={self.ndim} needs data with at least {self.ndim} batch dims, "
                             f"got batch size {tuple(data.batch_size)}.")
        if self.ndim == 2:
            data = data.transpose(0, 1)
        data = data.to(self.device)
        if self._data is None:
            self._allocate(data)
        elif data.shape[1: self.ndim] != self.shape[1:]:
            raise ValueError(f"This storage holds {self.shape[1]} envs; got data for {data.shape[1]}.")
        n = data.shape[0]
        slots = (self.cursor + torch.arange(n)) % self.capacity
        kept = min(n, self.capacity)  # a write longer than the storage keeps only its newest slots
        self._data[slots[n - kept:]] = data[n - kept:]
        self.cursor = (self.cursor + n) % self.capacity
        self.filled = min(self.filled + n, self.capacity)
        if self.ndim == 1:
            return slots
        num_envs = self.shape[1]
        pairs = torch.stack([slots[:, None].expand(n, num_envs), torch.arange(num_envs).expand(n, num_envs)], -1)
        return pairs.reshape(-1, 2)

    def _allocate(self, data: TensorDictBase) -> None:
        if self.ndim == 1:
            capacity = self.max_size
        else:
            capacity = self.max_size // data.shape[1]
            if capacity == 0:
                raise ValueError(f"max_size={self.max_size} cannot hold one time step of {data.shape[1]} envs.")
        self._data = data[0].new_zeros(capacity, *data.shape[1:])

    def get(self, index) -> TensorDictBase:
        """Elements at a storage-layout index: slots for ndim=1, ``(time_slots, envs)`` for ndim=2."""
        return self._data[index]

    def __getitem__(self, index) -> TensorDictBase:
        """Index the filled storage as the user sees it.

        For ndim=2 the view is ``[B, filled]`` (env-major, slots in storage order, which after a
        wrap is not chronological), and a ``[N, 2]`` long tensor of ``(time_slot, env)`` pairs, as
        returned by ``extend``, selects those N elements.
        """
        if self._data is None or self.filled == 0:
            raise RuntimeError("The storage is empty.")
        if self.ndim == 2 and isinstance(index, torch.Tensor) and index.ndim == 2 and index.shape[1] == 2:
            return self._data[index[:, 0], index[:, 1]]
        view = self._data[: self.filled]
        return view[index] if self.ndim == 1 else view.transpose(0, 1)[index]

    def empty(self) -> None:
        """Drop all data and the allocation; the next write allocates afresh."""
        self._data = None
        self.cursor = 0
        self.filled = 0

    def state_dict(self) -> dict:
        """Contents and cursor as plain tensors and ints (loadable with ``torch.load(weights_only=True)``)."""
        data = None if self._data is None else {"data": self._data.to_dict(), "batch_size": list(self._data.batch_size)}
        return {"storage": data, "cursor": self.cursor, "filled": self.filled}

    def load_state_dict(self, state: dict) -> None:
        data = state["storage"]
        self._data = None if data is None else TensorDict(data["data"], batch_size=data["batch_size"], device=self.device)
        self.cursor = state["cursor"]
        self.filled = state["filled"]
