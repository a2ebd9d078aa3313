"""MultiStepTransform against hand values and a per-frame loop of spec 4.2/4.3 over random rollouts."""

import pytest
import torch
from tensordict import TensorDict

import rlexp.data
from rlexp.data import LazyTensorStorage, MultiStepTransform, ReplayBuffer
from rlexp.registry import replay_transforms

GAMMA = 0.9


def random_rollout(batch: tuple[int, ...], steps: int, *, extra_reward: bool = False) -> TensorDict:
    """``[*batch, steps]`` frames with episode ends (terminations and truncations) and a mask."""
    shape = (*batch, steps)
    terminated = torch.rand(*shape, 1) < 0.12
    truncated = ~terminated & (torch.rand(*shape, 1) < 0.06)
    td = TensorDict({
        "observation": torch.randn(*shape, 3),
        "action": torch.randint(4, shape),
        "mask": torch.rand(shape) < 0.85,
        "next": {
            "observation": torch.randn(*shape, 3),
            "reward": torch.randn(*shape, 1),
            "done": terminated | truncated,
            "terminated": terminated,
            "truncated": truncated,
            "step_count": torch.randint(100, (*shape, 1)),
            "info": {"x": torch.randint(1000, (*shape, 2))},
        },
    }, batch_size=shape)
    if extra_reward:
        td["next", "bonus"] = torch.randn(*shape, 1)
    return td


def reference_frame(history: TensorDict, t: int, n: int, reward_keys: list[str]) -> TensorDict:
    """Spec 4.3 for frame t of one trajectory ``history`` ``[L]``, by an explicit loop."""
    done = history["next", "done"].reshape(-1)
    c = 1
    while c < n and not done[t + c - 1]:
        c += 1
    frame = history[t].clone()
    for key in ("observation", "step_count", ("info", "x")):
        frame["next", key] = history[t + c - 1]["next", key]
    for key in reward_keys:
        raw = history["next", key].double()
        frame["next", key] = sum(GAMMA ** j * raw[t + j] for j in range(c)).float()
        frame["next", "original_reward"] = history[t]["next", key]
    frame["steps_to_next_obs"] = torch.tensor(c)
    frame["gamma"] = torch.tensor(GAMMA ** c, dtype=torch.float32)
    frame["nonterminal"] = torch.tensor(c != 1) & history[t]["mask"]
    return frame


class Reference:
    """Keeps every raw frame; each call emits the frames past those already emitted, holding back n."""

    def __init__(self, reward_keys=("reward",)):
        self.history: TensorDict | None = None
        self.emitted = 0
        self.reward_keys = list(reward_keys)

    def inv(self, data: TensorDict, n: int) -> TensorDict | None:
        self.history = data if self.history is None else torch.cat([self.history, data], -1)
        start, stop = self.emitted, max(self.emitted, self.history.shape[-1] - n)
        self.emitted = stop
        if stop == start:
            return None
        rows = self.history.reshape(-1, self.history.shape[-1])
        out = torch.stack([torch.stack([reference_frame(row, t, n, self.reward_keys) for t in range(start, stop)])
                           for row in rows])
        return out.reshape(*self.history.shape[:-1], stop - start)


def assert_same(actual: TensorDict, expected: TensorDict):
    assert set(actual.keys(True, True)) == set(expected.keys(True, True))
    for key in expected.keys(True, True):
        a, e = actual[key], expected[key]
        assert a.dtype == e.dtype and a.shape == e.shape, key
        if a.is_floating_point():
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6, msg=str(key))
        else:
            assert torch.equal(a, e), key


# (T, n_steps) per call: a first call too short to emit, n_steps changed up and down between calls,
# calls shorter than n_steps, and n_steps=1.
SCHEDULE = [(2, 3), (5, 3), (1, 3), (7, 5), (4, 2), (3, 1), (9, 4), (1, 4), (6, 6), (8, 2)]


@pytest.mark.parametrize("batch", [(3,), (2, 2), ()])
def test_matches_the_per_frame_reference_across_calls(batch):
    torch.manual_seed(sum(batch) + len(batch))
    transform, reference = MultiStepTransform(3, GAMMA), Reference()
    crossed = 0
    for steps, n in SCHEDULE:
        transform.n_steps = n
        data = random_rollout(batch, steps)
        before = reference.emitted
        out, expected = transform.inv(data), reference.inv(data, n)
        if expected is None:
            assert out is None
            continue
        assert_same(out, expected)
        seen = reference.history.shape[-1] - steps  # frames that came in earlier calls
        crossed += int((before + torch.arange(out.shape[-1]) + out["steps_to_next_obs"] - 1 >= seen).logical_and(
            before + torch.arange(out.shape[-1]) < seen).sum())
    assert reference.emitted == reference.history.shape[-1] - SCHEDULE[-1][1]  # nothing lost or repeated
    assert crossed > 0  # some windows took their look-ahead from the next call's batch


def test_replay_buffer_extend_applies_the_transform():
    torch.manual_seed(5)
    rb = ReplayBuffer(storage=LazyTensorStorage(1000, ndim=2), transform=MultiStepTransform(3, GAMMA))
    reference, expected = Reference(), []
    for steps, n in SCHEDULE:
        rb.transform.n_steps = n
        data = random_rollout((2,), steps)
        emitted = reference.inv(data, n)
        index = rb.extend(data)
        if emitted is None:
            assert index.shape == (0, 2) and index.dtype == torch.long
            continue
        expected.append(emitted)
        assert index.shape == (emitted.numel(), 2)
    assert_same(rb[:], torch.cat(expected, -1))
    assert len(rb) == 2 * reference.emitted
    sample = rb.sample(7)  # the sampling side is the identity
    assert set(sample.keys(True, True)) == set(rb[:].keys(True, True))


def test_hand_computed_window():
    reward = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unsqueeze(-1)
    done = torch.tensor([False, True, False, False, False, False]).unsqueeze(-1)
    data = TensorDict({"observation": torch.arange(6.0).unsqueeze(-1),
                       "next": {"observation": torch.arange(1.0, 7.0).unsqueeze(-1), "reward": reward, "done": done}},
                      batch_size=[6])
    out = MultiStepTransform(3, 0.5).inv(data)
    # t=0: episode ends at t=1 -> c=2, r = 1 + .5*2; t=1: done -> c=1; t=2: c=3, r = 3 + .5*4 + .25*5
    assert out["next", "reward"].squeeze(-1).tolist() == [2.0, 2.0, 6.25]
    assert out["next", "original_reward"].squeeze(-1).tolist() == [1.0, 2.0, 3.0]
    assert out["next", "observation"].squeeze(-1).tolist() == [2.0, 2.0, 5.0]
    assert out["next", "done"].squeeze(-1).tolist() == [False, True, False]
    assert out["observation"].squeeze(-1).tolist() == [0.0, 1.0, 2.0]
    assert out["steps_to_next_obs"].tolist() == [2, 1, 3]
    assert out["gamma"].tolist() == [0.25, 0.5, 0.125]
    assert out["nonterminal"].tolist() == [True, False, True]
    assert out["steps_to_next_obs"].dtype == torch.int64 and out["gamma"].dtype == torch.float32


def test_several_reward_keys_share_original_reward():
    torch.manual_seed(7)
    transform = MultiStepTransform(3, GAMMA, reward_keys=["reward", "bonus"])
    reference = Reference(["reward", "bonus"])
    for steps in (5, 4):
        data = random_rollout((2,), steps, extra_reward=True)
        out = transform.inv(data)
        assert_same(out, reference.inv(data, 3))
    raw = reference.history["next", "bonus"][:, reference.emitted - 4: reference.emitted]
    assert torch.equal(out["next", "original_reward"], raw)  # the last key wins


def test_custom_keys_and_no_mask():
    torch.manual_seed(8)
    data = random_rollout((2,), 6).exclude("mask")
    data["next", "end"] = data["next", "truncated"].clone()
    transform = MultiStepTransform(2, GAMMA, done_key="end", done_keys=["end"], mask_key="other_mask")
    out = transform.inv(data)
    end = data["next", "end"].squeeze(-1)
    steps = torch.where(end[:, :4], 1, 2)  # episodes cut only by "end"
    assert torch.equal(out["steps_to_next_obs"], steps)
    assert torch.equal(out["nonterminal"], steps != 1)
    # "done" is no longer a done key, so it moves with the observations; "end" stays one-step
    target = torch.arange(4) + steps - 1
    assert torch.equal(out["next", "done"], data["next", "done"].gather(1, target.unsqueeze(-1)))
    assert torch.equal(out["next", "end"], data["next", "end"][:, :4])


def test_n_steps_validation_and_defaults():
    for bad in (0, -1, 2.5, "3", True):
        with pytest.raises(ValueError, match="The value of n_steps must be a strictly positive integer"):
            MultiStepTransform(bad, 0.9)
    transform = MultiStepTransform(2, 0.95)
    with pytest.raises(ValueError):
        transform.n_steps = 0
    assert transform.n_steps == 2 and transform.gamma == 0.95 and isinstance(transform.gamma, float)
    assert transform.reward_keys == ["reward"]
    assert transform.done_key == "done"
    assert transform.done_keys == ["done", "truncated", "terminated"]
    assert transform.mask_key == "mask"
    data = random_rollout((2,), 4)
    assert transform(data) is data


def test_state_dict_resumes_the_held_back_frames():
    torch.manual_seed(9)
    first, second = random_rollout((2,), 6), random_rollout((2,), 5)
    transform = MultiStepTransform(4, GAMMA)
    transform.inv(first)
    resumed = MultiStepTransform(1, GAMMA)
    resumed.load_state_dict(transform.state_dict())
    assert resumed.n_steps == 4
    assert_same(resumed.inv(second), transform.inv(second))


def test_registry_entries():
    assert replay_transforms.build({"name": "none"}) is None
    transform = replay_transforms.build({"name": "multistep", "n_steps": 4, "gamma": 0.5})
    assert isinstance(transform, MultiStepTransform)
    assert (transform.n_steps, transform.gamma) == (4, 0.5)
    default = rlexp.data.multistep()
    assert (default.n_steps, default.gamma) == (3, 0.99)
