"""Samplers: without-replacement epochs cover every element once; slices are contiguous in one episode."""

import pytest
import torch
from tensordict import TensorDict

from rlexp.data import LazyTensorStorage, ReplayBuffer, SamplerWithoutReplacement, SliceSampler


def numbered(num_envs: int, t0: int, steps: int, done: torch.Tensor | None = None) -> TensorDict:
    """``[B, T]`` data: ``env``, global ``time``, and ``("next", done | truncated)`` flags."""
    time = torch.arange(t0, t0 + steps).expand(num_envs, steps)
    env = torch.arange(num_envs)[:, None].expand(num_envs, steps)
    done = torch.zeros(num_envs, steps, 1, dtype=torch.bool) if done is None else done
    truncated = done & (torch.rand(done.shape) < 0.5)
    return TensorDict({"env": env, "time": time, "next": {"done": done, "truncated": truncated}},
                      batch_size=[num_envs, steps])


def test_without_replacement_covers_each_element_once_per_epoch():
    torch.manual_seed(0)
    rb = ReplayBuffer(storage=LazyTensorStorage(10), sampler=SamplerWithoutReplacement(), batch_size=3)
    rb.extend(TensorDict({"x": torch.arange(10)}, [10]))
    for _ in range(3):
        batches = [batch["x"] for batch in rb]
        assert [len(b) for b in batches] == [3, 3, 3, 1]
        assert sorted(torch.cat(batches).tolist()) == list(range(10))
    orders = {tuple(torch.cat([b["x"] for b in rb]).tolist()) for _ in range(4)}
    assert len(orders) > 1  # shuffled afresh each epoch


def test_without_replacement_ndim2_drop_last_and_no_shuffle():
    rb = ReplayBuffer(storage=LazyTensorStorage(12, ndim=2),
                      sampler=SamplerWithoutReplacement(drop_last=True), batch_size=5)
    rb.extend(numbered(3, 0, 4))
    for _ in range(2):
        batches = list(rb)
        assert [len(b) for b in batches] == [5, 5]
        pairs = [(e, t) for b in batches for e, t in zip(b["env"].tolist(), b["time"].tolist())]
        assert len(set(pairs)) == 10

    with pytest.raises(ValueError, match=r"The batch size \(13\) is greater than the storage capacity \(12\).*"
                                         "'drop_last' argument to False"):
        rb.sample(13)

    ordered = ReplayBuffer(storage=LazyTensorStorage(12, ndim=2),
                           sampler=SamplerWithoutReplacement(shuffle=False), batch_size=5)
    ordered.extend(numbered(3, 0, 4))
    first = ordered.sample()
    # storage order is time-major: (t0, env0), (t0, env1), (t0, env2), (t1, env0), ...
    assert first["time"].tolist() == [0, 0, 0, 1, 1]
    assert first["env"].tolist() == [0, 1, 2, 0, 1]


def test_without_replacement_restarts_when_the_buffer_grows():
    sampler = SamplerWithoutReplacement(shuffle=False)
    rb = ReplayBuffer(storage=LazyTensorStorage(10), sampler=sampler, batch_size=4)
    rb.extend(TensorDict({"x": torch.arange(6)}, [6]))
    assert rb.sample()["x"].tolist() == [0, 1, 2, 3]
    assert not sampler.ran_out
    rb.extend(TensorDict({"x": torch.arange(6, 8)}, [2]))
    assert rb.sample()["x"].tolist() == [0, 1, 2, 3]  # a new epoch over the 8 elements
    assert rb.sample()["x"].tolist() == [4, 5, 6, 7]
    assert sampler.ran_out
    state = sampler.state_dict()
    rb.empty()
    assert not sampler.ran_out
    sampler.load_state_dict(state)
    assert sampler.ran_out


def check_slices(sample: TensorDict, stored: TensorDict, num_slices: int, slice_len: int):
    """Each slice: one env, consecutive times, no stored episode end before its last step; cut flags right."""
    slices = sample.reshape(num_slices, slice_len)
    assert (slices["env"] == slices["env"][:, :1]).all()
    assert (slices["time"] == slices["time"][:, :1] + torch.arange(slice_len)).all()
    raw = stored[slices["env"], slices["time"]]  # stored is indexed [env, time]
    assert not raw["next", "done"][:, :-1].any()
    # inside a slice the flags are the stored ones; the last step is marked truncated+done
    # unless it is a stored episode end, which keeps its stored flags
    assert (slices["next"][:, :-1] == raw["next"][:, :-1]).all()
    ends_episode = raw["next", "done"][:, -1]
    assert slices["next", "done"][:, -1].all()
    expected_truncated = torch.where(ends_episode, raw["next", "truncated"][:, -1], True)
    assert (slices["next", "truncated"][:, -1] == expected_truncated).all()


def test_slices_are_contiguous_in_one_env_and_one_episode():
    torch.manual_seed(1)
    num_envs, steps = 3, 60
    done = torch.rand(num_envs, steps, 1) < 0.08
    stored = numbered(num_envs, 0, steps, done)
    rb = ReplayBuffer(storage=LazyTensorStorage(num_envs * steps, ndim=2), sampler=SliceSampler(num_slices=8),
                      batch_size=40)
    rb.extend(stored[:, :25])
    rb.extend(stored[:, 25:])
    seen_ends = 0
    for _ in range(20):
        sample = rb.sample()
        check_slices(sample, stored, 8, 5)
        seen_ends += int(stored[sample["env"], sample["time"]]["next", "done"].sum())
    assert seen_ends > 0  # slices ending exactly at an episode end occurred


def test_slices_do_not_cross_the_write_cursor_of_a_wrapped_storage():
    torch.manual_seed(2)
    num_envs, steps = 2, 50
    stored = numbered(num_envs, 0, steps)  # no episode ends: only the cursor and the storage end split
    rb = ReplayBuffer(storage=LazyTensorStorage(2 * 20, ndim=2), sampler=SliceSampler(slice_len=6))
    for t0 in range(0, steps, 10):
        rb.extend(stored[:, t0: t0 + 10])
    # 20 time slots now hold t = 40..49 (slots 0-9) and t = 30..39 (slots 10-19): slot 9 -> 10 jumps back
    starts = set()
    for _ in range(30):
        sample = rb.sample(24)
        check_slices(sample, stored, 4, 6)
        starts.update(sample.reshape(4, 6)["time"][:, 0].tolist())
    assert starts <= set(range(30, 35)) | set(range(40, 45))
    assert starts & set(range(30, 35)) and starts & set(range(40, 45))


def test_strict_length_and_trajectory_ids():
    torch.manual_seed(3)
    done = torch.zeros(2, 12, 1, dtype=torch.bool)
    done[0, 1::2] = True  # env 0: episodes of 2 steps
    stored = numbered(2, 0, 12, done)
    strict = ReplayBuffer(storage=LazyTensorStorage(24, ndim=2), sampler=SliceSampler(slice_len=3))
    strict.extend(stored)
    for _ in range(10):
        assert (strict.sample(12)["env"] == 1).all()  # env 0 has no 3-step trajectory

    loose = ReplayBuffer(storage=LazyTensorStorage(24, ndim=2),
                         sampler=SliceSampler(slice_len=3, strict_length=False, truncated_key=None))
    loose.extend(stored)
    lengths_seen = set()
    for _ in range(10):
        sample, info = loose.sample(12, return_info=True)
        lengths = info["slice_lengths"]
        assert len(sample) == int(lengths.sum())
        for piece, n in zip(sample.split(lengths.tolist()), lengths.tolist()):
            assert n == (2 if piece["env"][0] == 0 else 3)
            assert (piece["time"] == piece["time"][0] + torch.arange(n)).all()
            assert (piece["env"] == piece["env"][0]).all()
            lengths_seen.add(n)
    assert lengths_seen == {2, 3}

    episodes = TensorDict({"episode": torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3]), "time": torch.arange(10)}, [10])
    by_id = ReplayBuffer(storage=LazyTensorStorage(10), sampler=SliceSampler(slice_len=3, traj_key="episode",
                                                                              truncated_key=None))
    by_id.extend(episodes)
    for _ in range(10):
        for piece in by_id.sample(6).split(3):
            assert piece["episode"].unique().numel() == 1
            assert piece["episode"][0] in (0, 2)


def test_slice_sampler_argument_errors():
    with pytest.raises(TypeError, match="Either num_slices or slice_len must be not None, and not both. "
                                        "Got num_slices=None and slice_len=None"):
        SliceSampler()
    with pytest.raises(TypeError, match="Got num_slices=2 and slice_len=3"):
        SliceSampler(num_slices=2, slice_len=3)
    rb = ReplayBuffer(storage=LazyTensorStorage(10), sampler=SliceSampler(slice_len=3))
    rb.extend(numbered(1, 0, 10)[0])
    with pytest.raises(RuntimeError, match="The batch-size must be divisible by the slice length, got "
                                           "batch_size=7 and slice_len=3"):
        rb.sample(7)
    by_count = ReplayBuffer(storage=LazyTensorStorage(10), sampler=SliceSampler(num_slices=2))
    by_count.extend(numbered(1, 0, 10)[0])
    with pytest.raises(RuntimeError, match="divisible by the number of slices, got batch_size=7 and num_slices=2"):
        by_count.sample(7)
    too_short = ReplayBuffer(storage=LazyTensorStorage(10), sampler=SliceSampler(slice_len=11))
    too_short.extend(numbered(1, 0, 10)[0])
    with pytest.raises(RuntimeError, match=r"Did not find a single trajectory with sufficient length "
                                           r"\(length range: 10 - 10 / required=11\)"):
        too_short.sample(11)
