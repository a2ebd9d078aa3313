"""The trainer's glue: n-step windows with the window's termination, minibatch epochs, combination checks."""

import pytest
import torch
from tensordict import TensorDict

from support import compose_config
from rlexp.collector import MASK
from rlexp.data import MultiStepTransform
from rlexp.loggers import Logger
from rlexp.objectives import ClipPPOLoss
from rlexp.registry import ConfigError, losses
from rlexp.data import n_step_rollout
from rlexp.checkpoint import load_checkpoint
from rlexp.trainer import Minibatches, Trainer, train


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


@losses.register("clip_ppo_keys_in_turns")
class KeysInTurns(ClipPPOLoss):
    """Returns its outputs in a different key order on every other call, plus the call's number."""

    calls = 0

    def forward(self, tensordict):
        out = super().forward(tensordict)
        type(self).calls += 1
        out["call"] = torch.tensor(float(type(self).calls))
        return out if type(self).calls % 2 else out.select(*reversed(list(out.keys())))


class Rows(Logger):
    def __init__(self):
        self.rows = []

    def log(self, metrics, step):
        self.rows.append(dict(metrics))


def test_loss_outputs_are_averaged_by_key_and_phases_are_timed(tmp_path):
    KeysInTurns.calls = 0
    rows = Rows()
    train(compose_config("logger=none", "loss.name=clip_ppo_keys_in_turns", "collector.total_frames=2048",
                         "collector.frames_per_batch=1024", "env.num_envs=8", "optim.ppo_epochs=2",
                         "optim.num_minibatches=2", "eval.interval=2048", "eval.episodes=2"), tmp_path,
          make_logger=lambda: rows)
    assert [row["call"] for row in rows.rows] == [2.5, 6.5]  # the mean of calls 1-4 and 5-8, whatever the order
    for row in rows.rows:
        phases = {key for key in row if key.startswith("train/time_")}
        assert {"train/time_collect", "train/time_advantage", "train/time_update"} <= phases
        assert all(row[key] > 0 for key in phases)
        training = row["train/time_collect"] + row["train/time_advantage"] + row["train/time_update"]
        assert row["train/fps"] == pytest.approx(1024 / training)
    assert "train/time_eval" in rows.rows[-1] and "train/time_eval" not in rows.rows[0]


@pytest.mark.parametrize("overrides, message", [
    (["replay_transform=multistep", "value_estimator=td0", "replay_transform.n_steps=64"],
     "replay_transform.n_steps=64 must be smaller than the 64 steps per env"),
    (["policy=gru", "replay_transform=multistep", "value_estimator=td0"],
     "optim.sequence_length=8 with replay_transform=multistep"),
    (["loss=klpen_ppo", "optim.compile=true"], "optim.compile=true with loss=klpen_ppo: its forward updates beta"),
    (["num_seeds=2", "optim.compile=true"], "num_seeds=2 with optim.compile=true is not supported"),
])
def test_combinations_that_used_to_fail_mid_run_are_refused_before_training(tmp_path, overrides, message):
    opened = []
    with pytest.raises(ConfigError, match=message):
        train(compose_config("logger=none", "env.num_envs=32", *overrides), tmp_path,
              make_logger=lambda: opened.append(1) or Logger())
    assert not opened


@losses.register("clip_ppo_in_eval_mode")
class EvalModeClipPPO(ClipPPOLoss):
    actor_in_eval_mode = True  # a capability, not a class: no GRPOLoss subclass needed


@pytest.mark.parametrize("loss, training", [("clip_ppo", True), ("grpo", False), ("clip_ppo_in_eval_mode", False)])
def test_the_loss_declares_whether_the_actor_trains_in_eval_mode(tmp_path, loss, training):
    overrides = ["loss=grpo"] if loss == "grpo" else [f"loss.name={loss}"]
    trainer = Trainer(compose_config("logger=none", *overrides), torch.device("cpu"), {}, video_dir=tmp_path)
    assert trainer.actor.training is training
    trainer.close()


def test_the_compiled_update_is_the_eager_one_up_to_rounding_and_resumes_exactly(tmp_path):
    """optim.compile=true compiles the loss (its backward with it), the gradient clipping and the Adam step: the
    same losses as the eager update up to float rounding, and a resumed compiled run repeats the whole one bit for
    bit."""
    args = ["logger=none", "collector.total_frames=2048", "collector.frames_per_batch=1024", "env.num_envs=8",
            "optim.ppo_epochs=2", "optim.num_minibatches=2", "eval.interval=2048", "eval.episodes=2",
            "checkpoint.interval=1024"]
    from torch._dynamo.utils import counters

    rows, graphs = {}, {}
    for name, extra in (("eager", []), ("compiled", ["optim.compile=true"]), ("resumed", ["optim.compile=true"])):
        (tmp_path / name).mkdir()
        rows[name] = Rows()
        resume = load_checkpoint(tmp_path / "compiled" / "checkpoints" / "checkpoint_000000001024.pt") \
            if name == "resumed" else None
        before = counters["stats"]["unique_graphs"]
        train(compose_config(*args, *extra), tmp_path / name, make_logger=lambda rows=rows[name]: rows, resume=resume)
        graphs[name] = counters["stats"]["unique_graphs"] - before
    assert graphs["eager"] == 0 and graphs["compiled"] > 0  # compiled only when asked
    for eager, compiled in zip(rows["eager"].rows, rows["compiled"].rows, strict=True):
        for key in [key for key in eager if key.startswith("loss_")]:
            assert compiled[key] == pytest.approx(eager[key], rel=1e-4, abs=1e-6), key

    def untimed(rows: Rows) -> list[dict]:
        return [{k: v for k, v in row.items() if not k.startswith(("train/time_", "train/fps", "train/seconds"))}
                for row in rows.rows]

    assert untimed(rows["resumed"]) == untimed(rows["compiled"])[1:]
    final = {name: load_checkpoint(tmp_path / name / "checkpoint.pt")["loss"] for name in ("compiled", "resumed")}
    assert all(torch.equal(final["resumed"][key], value) for key, value in final["compiled"].items())
