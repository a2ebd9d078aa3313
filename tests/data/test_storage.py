"""LazyTensorStorage through ReplayBuffer: layout, circular writes, indexing, sampling, state (spec 4.4)."""

import io

import pytest
import torch
from tensordict import TensorDict

from rlexp.data import LazyTensorStorage, RandomSampler, ReplayBuffer


def flat(values) -> TensorDict:
    """``[N]`` elements; ``x`` holds the given values, ``next.y`` twice them (a nested entry)."""
    x = torch.as_tensor(values)
    return TensorDict({"x": x, "next": {"y": 2 * x.unsqueeze(-1).float()}}, batch_size=[len(x)])


def rollout(num_envs: int, t0: int, steps: int) -> TensorDict:
    """``[B, T]`` rollout whose ``x`` encodes ``100 * env + time``."""
    x = 100 * torch.arange(num_envs)[:, None] + torch.arange(t0, t0 + steps)
    return TensorDict({"x": x, "obs": x.unsqueeze(-1).expand(-1, -1, 3).float()}, batch_size=[num_envs, steps])


def test_ndim1_extend_returns_slots_and_overwrites_oldest():
    rb = ReplayBuffer(storage=LazyTensorStorage(5))
    assert len(rb) == 0
    assert rb.extend(flat([0, 1, 2])).tolist() == [0, 1, 2]
    assert len(rb) == 3
    assert rb[:]["x"].tolist() == [0, 1, 2]
    assert rb.extend(flat([3, 4, 5, 6])).tolist() == [3, 4, 0, 1]
    assert len(rb) == 5
    assert rb[:]["x"].tolist() == [5, 6, 2, 3, 4]
    assert rb[:]["next", "y"].squeeze(-1).tolist() == [10.0, 12.0, 4.0, 6.0, 8.0]
    assert rb[1]["x"].item() == 6
    assert rb[torch.tensor([4, 0])]["x"].tolist() == [4, 5]


def test_ndim1_write_longer_than_capacity_keeps_the_newest():
    rb = ReplayBuffer(storage=LazyTensorStorage(4))
    rb.extend(flat([0]))
    rb.extend(flat(range(10, 17)))  # 7 values from cursor 1: slots 1,2,3,0,1,2,3
    assert rb[:]["x"].tolist() == [13, 14, 15, 16]
    assert rb.extend(flat([20])).tolist() == [0]


def test_ndim2_keeps_env_time_layout_and_returns_time_major_pairs():
    rb = ReplayBuffer(storage=LazyTensorStorage(7, ndim=2))  # 2 envs -> 7 // 2 = 3 time slots
    index = rb.extend(rollout(2, 0, 2))
    assert index.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert len(rb) == 4
    assert rb[:].batch_size == (2, 2)
    assert rb[:]["x"].tolist() == [[0, 1], [100, 101]]
    assert rb.storage.get(slice(None))["x"].tolist() == [[0, 100], [1, 101]]  # time-major inside
    index = rb.extend(rollout(2, 2, 2))
    assert index.tolist() == [[2, 0], [2, 1], [0, 0], [0, 1]]
    assert len(rb) == 6
    # storage order after the wrap: slot 0 holds t=3, slots 1 and 2 hold t=1 and t=2
    assert rb[:]["x"].tolist() == [[3, 1, 2], [103, 101, 102]]
    assert rb[:]["obs"].shape == (2, 3, 3)
    assert rb[index]["x"].tolist() == [2, 102, 3, 103]
    assert rb[1]["x"].tolist() == [103, 101, 102]


def test_add_writes_one_element():
    rb = ReplayBuffer(storage=LazyTensorStorage(3))
    rb.extend(flat([0, 1]))
    assert rb.add(flat([7])[0]) == 2
    assert rb.add(flat([8])[0]) == 0
    assert rb[:]["x"].tolist() == [8, 1, 7]

    rb2 = ReplayBuffer(storage=LazyTensorStorage(6, ndim=2))
    rb2.extend(rollout(3, 0, 1))
    index = rb2.add(rollout(3, 1, 1)[:, 0])  # one time step of the 3 envs
    assert index.tolist() == [[1, 0], [1, 1], [1, 2]]
    assert rb2[:]["x"].tolist() == [[0, 1], [100, 101], [200, 201]]


@pytest.mark.parametrize("seed", [0, 3])
def test_random_sampling_follows_the_documented_draws(seed):
    rb = ReplayBuffer(storage=LazyTensorStorage(10), batch_size=6)
    rb.extend(flat(range(20, 27)))
    torch.manual_seed(seed)
    expected = torch.randint(0, 7, (6,)) + 20
    torch.manual_seed(seed)
    assert rb.sample()["x"].tolist() == expected.tolist()

    rb2 = ReplayBuffer(storage=LazyTensorStorage(12, ndim=2))
    rb2.extend(rollout(3, 0, 2))
    rb2.extend(rollout(3, 2, 1))
    torch.manual_seed(seed)
    slots, envs = torch.randint(3, (5,)), torch.randint(3, (5,))
    torch.manual_seed(seed)
    sample = rb2.sample(5)
    assert sample.batch_size == (5,)
    assert sample["x"].tolist() == (100 * envs + slots).tolist()


def test_default_sampler_and_missing_batch_size():
    rb = ReplayBuffer(storage=LazyTensorStorage(4))
    assert isinstance(rb.sampler, RandomSampler)
    rb.extend(flat([1]))
    with pytest.raises(RuntimeError, match="batch_size not specified.*pass it to the sample method"):
        rb.sample()
    with pytest.raises(RuntimeError, match="Cannot iterate over the replay buffer. Batch_size was not specified"):
        next(iter(rb))


def test_empty_drops_data_and_allows_a_new_layout():
    rb = ReplayBuffer(storage=LazyTensorStorage(4), batch_size=2)
    with pytest.raises(RuntimeError, match="Cannot sample from an empty storage"):
        rb.sample()
    rb.extend(flat([1, 2, 3]))
    rb.empty()
    assert len(rb) == 0
    with pytest.raises(RuntimeError, match="empty"):
        rb.sample()
    with pytest.raises(RuntimeError, match="empty"):
        rb[:]
    assert rb.extend(TensorDict({"z": torch.ones(2, 5)}, [2])).tolist() == [0, 1]
    assert rb[:]["z"].shape == (2, 5)


def test_writes_must_match_the_stored_keys_and_envs():
    rb = ReplayBuffer(storage=LazyTensorStorage(8, ndim=2))
    rb.extend(rollout(2, 0, 2))
    with pytest.raises(ValueError, match="keys"):
        rb.extend(rollout(2, 2, 1).set("extra", torch.zeros(2, 1)))
    with pytest.raises(ValueError, match="keys"):
        rb.extend(rollout(2, 2, 1).exclude("obs"))
    with pytest.raises(ValueError, match="batch shape"):
        rb.extend(rollout(3, 2, 1))
    with pytest.raises(ValueError, match="batch dims"):
        rb.extend(rollout(2, 0, 1)[:, 0])
    with pytest.raises(ValueError, match="cannot hold"):
        ReplayBuffer(storage=LazyTensorStorage(2, ndim=2)).extend(rollout(3, 0, 1))


@pytest.mark.parametrize("ndim", [1, 2])
def test_state_dict_round_trip(ndim):
    storage = LazyTensorStorage(5, ndim=ndim)
    rb = ReplayBuffer(storage=storage)
    data = (lambda t0, n: flat(range(t0, t0 + n))) if ndim == 1 else (lambda t0, n: rollout(1, t0, n))
    rb.extend(data(0, 4))
    rb.extend(data(4, 3))
    buffer = io.BytesIO()
    torch.save(rb.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    restored = ReplayBuffer(storage=LazyTensorStorage(5, ndim=ndim))
    restored.load_state_dict(state)
    assert len(restored) == len(rb) == 5
    assert (restored[:] == rb[:]).all()
    # the cursor came along: the next write lands in the same slot in both
    assert restored.extend(data(7, 1)).tolist() == rb.extend(data(7, 1)).tolist()
    assert (restored[:] == rb[:]).all()

    # loading copies: later writes to the source do not show up in the restored buffer
    in_memory = ReplayBuffer(storage=LazyTensorStorage(5, ndim=ndim))
    in_memory.load_state_dict(rb.state_dict())
    before = in_memory[:].clone()
    rb.extend(data(100, 2))
    assert (in_memory[:] == before).all()

    with pytest.raises(ValueError, match="max_size"):
        ReplayBuffer(storage=LazyTensorStorage(6, ndim=ndim)).load_state_dict(state)
    empty = ReplayBuffer(storage=LazyTensorStorage(5, ndim=ndim))
    empty.load_state_dict(ReplayBuffer(storage=LazyTensorStorage(5, ndim=ndim)).state_dict())
    assert len(empty) == 0
