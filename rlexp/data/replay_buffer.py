"""ReplayBuffer: a storage, a sampler and an optional transform, with torchrl's call semantics."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from tensordict import TensorDictBase

from rlexp.data.samplers import RandomSampler
from rlexp.data.storage import LazyTensorStorage


class ReplayBuffer:
    """Writes go through ``transform.inv`` into ``storage``; samples come from ``sampler``.

    ``transform`` is any object with ``inv(td) -> td | None`` (applied on writes; ``None`` means
    nothing to write yet) and ``__call__(td) -> td`` (applied to samples), e.g. MultiStepTransform.
    ``batch_size`` is the default for ``sample()`` and is required to iterate over the buffer.
    """

    def __init__(self, *, storage: LazyTensorStorage, sampler=None, transform=None, batch_size: int | None = None):
        self.storage = storage
        self.sampler = RandomSampler() if sampler is None else sampler
        self.transform = transform
        self.batch_size = batch_size

    def __len__(self) -> int:
        return len(self.storage)

    def _empty_index(self) -> torch.Tensor:
        return torch.zeros((0, self.storage.ndim), dtype=torch.long)

    def extend(self, data: TensorDictBase) -> torch.Tensor:
        """Write ``data`` (after ``transform.inv``); return the storage indices written.

        ndim=1: ``[N]`` slots; ndim=2: ``[T*B, 2]`` ``(time_slot, env)`` pairs. When the transform
        holds everything back, nothing is written and the result is empty, ``[0, storage.ndim]``.
        """
        if self.transform is not None:
            data = self.transform.inv(data)
            if data is None:
                return self._empty_index()
        return self.storage.extend(data)

    def add(self, data: TensorDictBase) -> int | torch.Tensor:
        """Write one element: ``[]`` for ndim=1 (returns its slot), one time step ``[B]`` for ndim=2.

        The transform sees the element with a time dimension of length 1 appended, as on a
        one-step ``extend``. ndim=2 returns the ``[B, 2]`` index pairs; an element held back by
        the transform returns an empty index.
        """
        if self.storage.ndim == 2:
            return self.extend(data.unsqueeze(-1))
        if self.transform is not None:
            data = self.transform.inv(data.unsqueeze(-1))
            if data is None:
                return self._empty_index()
            data = data.squeeze(-1)
        return int(self.storage.extend(data.unsqueeze(0))[0])

    def sample(self, batch_size: int | None = None, return_info: bool = False):
        """A ``[batch_size]`` tensordict drawn by the sampler (plus its info dict if ``return_info``)."""
        batch_size = self.batch_size if batch_size is None else batch_size
        if batch_size is None:
            raise RuntimeError("batch_size not specified. You can specify the batch_size when constructing the "
                               "replay buffer, or pass it to the sample method.")
        index, info = self.sampler.sample(self.storage, batch_size)
        data = self.storage.get(index)
        if "updates" in info:
            data.update(info["updates"])
        if self.transform is not None:
            data = self.transform(data)
        info["index"] = index
        return (data, info) if return_info else data

    def __iter__(self) -> Iterator[TensorDictBase]:
        """Yield ``sample()`` until the sampler's epoch runs out (never, for random samplers)."""
        if self.batch_size is None:
            raise RuntimeError("Cannot iterate over the replay buffer. Batch_size was not specified during "
                               "construction of the replay buffer.")
        self.sampler.ran_out = False
        while not self.sampler.ran_out:
            yield self.sample()

    def __getitem__(self, index) -> TensorDictBase:
        """Stored data as ``storage[index]``: ``rb[:]`` is ``[N]`` (ndim=1) or ``[B, filled]`` (ndim=2)."""
        return self.storage[index]

    def empty(self) -> None:
        """Drop the stored data and the sampler's epoch state."""
        self.storage.empty()
        self.sampler.empty()

    def state_dict(self) -> dict:
        """Storage, sampler and (if it has state) transform state."""
        state = {"storage": self.storage.state_dict(), "sampler": self.sampler.state_dict()}
        if self.transform is not None and hasattr(self.transform, "state_dict"):
            state["transform"] = self.transform.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.storage.load_state_dict(state["storage"])
        self.sampler.load_state_dict(state["sampler"])
        if "transform" in state:
            self.transform.load_state_dict(state["transform"])
