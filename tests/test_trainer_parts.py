"""The trainer's glue: n-step windows with the window's termination, minibatch epochs, combination checks."""

import pytest
import torch
from tensordict import TensorDict

from support import compose_config
from rlexp.collector import MASK
from rlexp.data import MultiStepTransform
from rlexp.loggers import Logger
from rlexp.registry import ConfigError
from rlexp.trainer import Minibatches, n_step_rollout, train


def rollout(terminated_at: list[int], T: int = 8) -> TensorDict:
    terminated = torch.zeros(1, T, 1, dtype=torch.bool)
    terminated[0, terminated_at] = True
    return TensorDict({"observation": torch.arange(T, dtype=torch.float32).view(1, T, 1),
                       "next": {"observation": torch.arange(1, T + 1, dtype=torch.float32).view(1, T, 1),
                                "reward": torch.ones(1, T, 1), "done": terminated.clone(),
                                "terminated": terminated, "truncated": torch.zeros_like(terminated)}},
                      batch_size=[1, T])


def test_n_step_windows_carry_the_termination_at_their_last_step():
    transform = MultiStepTransform(n_steps=3, gamma=0.5)
    assert n_step_rollout(transform, rollout([], T=3)) is None  # the first n_steps frames are held back
    out = n_step_rollout(transform, rollout([4]))  # raw frames 3..10; the episode terminates at frame 7
    # Frames 0..7 of this call are raw frames 0..7 overall: windows [0..2], [1..3], ..., [5..7], [6, 7], [7]
    steps = out["steps_to_next_obs"][0].tolist()
    assert steps == [3, 3, 3, 3, 3, 3, 2, 1]
    # raw frame t=5 (index 5 here) looks ahead to frame 7, the terminal step: no bootstrap from it
    assert out["next", "terminated"][0, :, 0].tolist() == [False, False, False, False, False, True, True, True]
    torch.testing.assert_close(out["next", "reward"][0, 5, 0], torch.tensor(1 + 0.5 + 0.25))
    assert "window_terminated" not in out["next"].keys()


def test_minibatches_visit_every_valid_frame_once_per_epoch():
    data = TensorDict({"x": torch.arange(12.0).view(3, 4), MASK: torch.arange(12).view(3, 4) % 4 != 3},
                      batch_size=[3, 4])
    minibatches = Minibatches(data, num_minibatches=4)
    for _ in range(2):
        seen = torch.cat([minibatch["x"] for minibatch in minibatches])
        assert sorted(seen.tolist()) == [x for x in range(12) if x % 4 != 3]


@pytest.mark.parametrize("overrides, message", [
    (["replay_transform=multistep"], "only value_estimator=td0"),
    (["loss=grpo", "replay_transform=multistep"], "grouped episode collection"),
])
def test_meaningless_combinations_are_rejected(tmp_path, overrides, message):
    cfg = compose_config("logger=none", *overrides)
    with pytest.raises(ConfigError, match=message):
        train(cfg, tmp_path, make_logger=Logger)
