"""The seed's StepCounter example: two CartPole envs, 100 rollouts of 50 steps, n_steps=3, gamma=0.95.

rlexp's env wrapper has no step counter, so the test counts steps itself exactly as torchrl's
StepCounter does: 0 at an episode start, ``("next", "step_count") = step_count + 1``.
"""

import torch

from rlexp.data import LazyTensorStorage, MultiStepTransform, ReplayBuffer
from rlexp.envs import stack_steps
from rlexp.envs.gym import make_gym_env


def test_step_count_pattern_of_the_seed_example():
    torch.manual_seed(0)
    env = make_gym_env(id="CartPole-v1", num_envs=2)
    rb = ReplayBuffer(storage=LazyTensorStorage(100, ndim=2), transform=MultiStepTransform(n_steps=3, gamma=0.95))
    td = env.reset(seed=0)
    count = torch.zeros(2, 1, dtype=torch.long)
    history = []
    for _ in range(100):
        steps = []
        for _ in range(50):
            td["step_count"] = count
            td["action"] = torch.randint(2, (2,))
            td, next_td = env.step_and_maybe_reset(td)
            td["next", "step_count"] = count + 1
            count = torch.where(td["next", "done"], 0, count + 1)
            steps.append(td)
            td = next_td
        rollout = stack_steps(steps)  # [2, 50], as rlexp's collector builds it
        history.append(rollout)
        rb.extend(rollout)
    env.close()

    stored = rb[:]
    assert stored.batch_size == (2, 50)
    assert stored["step_count"].shape == (2, 50, 1)
    # The first extend emitted 47 frames into slots 0..46, each later one 50, so the newest write
    # ended at slot 46: storage order is a rotation of the last 50 emitted frames, steps 4947..4996
    # (the last 3 of the 5000 are held back by the transform).
    chronological = torch.cat([stored[:, 47:], stored[:, :47]], dim=1)
    raw = torch.cat(history, dim=-1)
    root = raw["step_count"][:, 4947:4997]
    assert torch.equal(chronological["step_count"], root)

    steps_ahead = chronological["steps_to_next_obs"].unsqueeze(-1)
    # "The next step_count is 3 steps in the future": within an episode ("next", "step_count")
    # is the root count + 3 (the seed's printout shows +4, against its own "t + n_steps - 1" and
    # spec 4.3; the spec wins); a look-ahead cut by an episode end stops at that end.
    assert torch.equal(chronological["next", "step_count"], root + steps_ahead)
    full = steps_ahead == 3
    assert full.float().mean() > 0.7
    assert torch.equal(chronological["next", "step_count"][full], root[full] + 3)
    assert (~full).any()  # some windows were cut by an episode end
    # the done flags stay one-step: a frame whose window is cut short ends at an episode end
    # within its c steps, and only a frame that is itself the last step of an episode says done
    done = chronological["next", "done"]
    assert torch.equal(done, raw["next", "done"][:, 4947:4997])
    assert (steps_ahead[done] == 1).all()
