"""PolicyStep writes the keys and numbers of the tensordict call it replaces, for every built-in policy."""

import math
import warnings
import weakref

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import (InteractionType, ProbabilisticTensorDictModule, TensorDictModule, TensorDictSequential,
                           set_interaction_type)

from rlexp.collector import Collector
from rlexp.envs.gym import make_gym_env
from rlexp.modules import set_recurrent_mode
from rlexp.checkpoint import load_checkpoint
from rlexp.loggers import Logger
from rlexp.modules import tensor_calls
from rlexp.modules.distributions import IndependentNormal
from rlexp.modules.tensor_calls import call_module, get_dist
from rlexp.policies import RecurrentStates, rollout_policy
from rlexp.policies import step as policy_step
from rlexp.policies.step import PolicyStep
from rlexp.registry import policies
from rlexp.trainer import train
from support import compose_config

CASES = [("CartPole-v1", {"name": "mlp"}), ("Pendulum-v1", {"name": "mlp"}),
         ("Pendulum-v1", {"name": "mlp", "distribution": "tanh_normal"}),
         ("CartPole-v1", {"name": "gru", "hidden_size": 8, "head_sizes": [8]}),
         ("Pendulum-v1", {"name": "gru", "hidden_size": 8, "head_sizes": [8], "num_layers": 2})]


def steps_both_ways(policy, root, deterministic, act=None):
    """(tensordict call's leaves, PolicyStep's dict) from the same inputs and the same RNG state."""
    mode = InteractionType.DETERMINISTIC if deterministic else InteractionType.RANDOM
    torch.manual_seed(1)
    with torch.no_grad(), set_interaction_type(mode):
        expected = policy(TensorDict(dict(root), batch_size=[len(root["observation"])]))
    torch.manual_seed(1)
    with torch.no_grad():
        got = (act or PolicyStep(policy))(dict(root), deterministic=deterministic)
    return dict(expected.items(include_nested=True, leaves_only=True)), got


def assert_same_step(got, expected):
    assert set(got) == set(expected)
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=0, atol=0, msg=f"{key}")


@pytest.mark.parametrize("env_id, config", CASES)
@pytest.mark.parametrize("deterministic", [False, True])
def test_same_keys_and_values_as_the_tensordict_call(env_id, config, deterministic):
    env = make_gym_env(id=env_id, num_envs=5)
    torch.manual_seed(0)
    actor, critic = policies.build(config, env.observation_space, env.action_space)
    policy = rollout_policy(actor, critic)
    act = PolicyStep(policy)
    states = RecurrentStates(policy)
    root = states.reset(env.reset(seed=0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the first call's check finds no difference
        for _ in range(3):  # later steps read carried (non-zero) recurrent states
            expected, got = steps_both_ways(policy, root, deterministic, act)
            assert_same_step(got, expected)
            step, root = env.step_and_maybe_reset(got)
            states.carry(step, root)
    assert act.calls is not None  # the built-in policies all take the tensor path, after the first call too


def test_categorical_draws_follow_the_probabilities():
    module = ProbabilisticTensorDictModule(in_keys=["logits"], out_keys=["action"], return_log_prob=True,
                                           distribution_class=torch.distributions.Categorical)
    probs = torch.tensor([0.2, 0.5, 0.0, 0.3])
    torch.manual_seed(0)
    step = PolicyStep(module)({"observation": torch.zeros(40_000, 1), "logits": probs.log().expand(40_000, 4)})
    frequencies = torch.bincount(step["action"], minlength=4) / 40_000
    torch.testing.assert_close(frequencies, probs, rtol=0, atol=0.01)  # ~5 standard deviations
    assert frequencies[2] == 0
    torch.testing.assert_close(step["action_log_prob"], probs.log()[step["action"]])


def test_normal_draws_follow_the_distribution():
    """The tensor path's Gaussian draws have the distribution's mean and std, and their log-prob is the formula's."""
    module = ProbabilisticTensorDictModule(in_keys=["loc", "scale"], out_keys=["action"], return_log_prob=True,
                                           distribution_class=IndependentNormal)
    loc, scale = torch.tensor([1.0, -2.0]), torch.tensor([0.5, 3.0])
    torch.manual_seed(0)
    act = PolicyStep(module)
    step = act({"observation": torch.zeros(40_000, 1), "loc": loc.expand(40_000, 2), "scale": scale.expand(40_000, 2)})
    assert act.calls is not None
    torch.testing.assert_close(step["action"].mean(0), loc, rtol=0, atol=5 * scale.max().item() / 200)
    torch.testing.assert_close(step["action"].std(0), scale, rtol=0.02, atol=0)
    density = torch.exp(-0.5 * ((step["action"] - loc) / scale) ** 2) / (scale * math.sqrt(2 * math.pi))
    torch.testing.assert_close(step["action_log_prob"], density.log().sum(-1))


@pytest.mark.parametrize("env_id, config", CASES)
def test_loss_side_calls_match_the_modules_on_rollout_batches(env_id, config):
    """get_dist / call_module (used by the losses) against the modules' own calls, GRUs in recurrent mode."""
    env = make_gym_env(id=env_id, num_envs=3, max_episode_steps=7)
    torch.manual_seed(0)
    actor, critic = policies.build(config, env.observation_space, env.action_space)
    rollout = Collector(env, rollout_policy(actor, critic), 3 * 16, torch.device("cpu"), seed=0).collect()
    with torch.no_grad(), set_recurrent_mode(True):
        expected = actor.get_dist(rollout.copy()).log_prob(rollout["action"])
        torch.testing.assert_close(get_dist(actor, rollout.copy()).log_prob(rollout["action"]), expected,
                                   rtol=0, atol=0)
        torch.testing.assert_close(call_module(critic, rollout.select(*critic.in_keys))["state_value"],
                                   critic(rollout.select(*critic.in_keys))["state_value"], rtol=0, atol=0)


class Doubler(TensorDictModule):
    """A TensorDictModule subclass: PolicyStep cannot know its forward, so it calls it on a tensordict."""

    def forward(self, tensordict):
        return super().forward(tensordict).apply(lambda x: 2 * x)


def test_unknown_modules_fall_back_to_the_tensordict_call():
    env = make_gym_env(id="CartPole-v1", num_envs=3)
    module = Doubler(torch.nn.Linear(4, 2), in_keys=["observation"], out_keys=["logits"])
    root = env.reset(seed=0)
    assert PolicyStep(module).calls is None
    expected, got = steps_both_ways(module, root, deterministic=False)
    assert_same_step(got, expected)


def cartpole_actor():
    env = make_gym_env(id="CartPole-v1", num_envs=3)
    torch.manual_seed(0)
    actor, _ = policies.build({"name": "mlp"}, env.observation_space, env.action_space)
    return actor, env.reset(seed=0)


def test_forward_hooks_are_run():
    """A forward hook on a part of the policy rewrites its output: the tensor path would skip it."""
    actor, root = cartpole_actor()
    logits = actor.module[0]
    logits.register_forward_hook(lambda module, args, out: out.set("logits", out["logits"] * 0))
    assert PolicyStep(actor).calls is None and tensor_calls.module_calls(actor, step=False) is None
    expected, got = steps_both_ways(actor, root, deterministic=True)
    assert_same_step(got, expected)
    assert (got["logits"] == 0).all() and (got["action"] == 0).all()  # argmax of equal logits: the first


def test_discarded_outputs_are_not_written():
    """The out key "_" discards that output of the network."""
    net = torch.nn.Linear(4, 2)
    module = TensorDictModule(lambda x: (net(x), x.sum(-1)), in_keys=["observation"], out_keys=["logits", "_"])
    root = make_gym_env(id="CartPole-v1", num_envs=3).reset(seed=0)
    assert PolicyStep(module).calls is None
    expected, got = steps_both_ways(module, root, deterministic=False)
    assert_same_step(got, expected)
    assert "_" not in got and "logits" in got


def test_selected_out_keys_are_honoured_on_a_sequence():
    actor, root = cartpole_actor()
    actor.select_out_keys("action", "action_log_prob")
    assert PolicyStep(actor).calls is None
    expected, got = steps_both_ways(actor, root, deterministic=False)
    assert_same_step(got, expected)
    assert "logits" not in got and "action" in got


def test_selected_out_keys_are_honoured_on_a_module():
    """On a TensorDictModule ``select_out_keys`` is a forward hook that drops the other out keys (tensordict 0.14
    also drops the keys that are neither in nor out keys); the step keeps the keys it came with."""
    net = torch.nn.Linear(4, 2)
    module = TensorDictModule(lambda x: (net(x), x.sum(-1)), in_keys=["observation"], out_keys=["logits", "total"])
    module.select_out_keys("logits")
    root = make_gym_env(id="CartPole-v1", num_envs=3).reset(seed=0)
    assert PolicyStep(module).calls is None
    expected, got = steps_both_ways(module, root, deterministic=False)
    assert "total" not in expected and set(got) == set(root) | {"logits"}
    torch.testing.assert_close(got["logits"], expected["logits"], rtol=0, atol=0)


class Counter(torch.nn.Module):
    """Scales its input by the number of times it was called: no two calls agree."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x[..., :2] * self.calls


def test_a_first_call_that_differs_falls_back_with_one_warning():
    module = TensorDictModule(Counter(), in_keys=["observation"], out_keys=["logits"])
    root = make_gym_env(id="CartPole-v1", num_envs=3).reset(seed=0)
    act = PolicyStep(module)
    assert act.calls is not None  # nothing in its structure tells
    with pytest.warns(RuntimeWarning, match="the values of 'logits' differ"):
        first = act(dict(root))
    torch.testing.assert_close(first["logits"], 2 * root["observation"][:, :2])  # the module's own call
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = act(dict(root))
    assert act.calls is None
    torch.testing.assert_close(second["logits"], 3 * root["observation"][:, :2])


def test_a_first_call_that_draws_differently_falls_back():
    """Equal outputs but a different RNG state afterwards would change every later draw."""
    actor, root = cartpole_actor()
    act = PolicyStep(actor)
    act.calls = [*act.calls, lambda data, deterministic: torch.rand(1)]
    with pytest.warns(RuntimeWarning, match="random number generator"):
        act(dict(root))
    assert act.calls is None


@pytest.mark.parametrize("overrides", [["env=cartpole"], ["env=pendulum"],
                                       ["policy=gru", "env=cartpole_masked", "optim.sequence_length=8"]])
def test_training_on_the_tensor_path_is_bit_identical_to_the_tensordict_calls(tmp_path, monkeypatch, overrides):
    """The fast path changes no number: a short run with every module called as a tensordict module
    (PolicyStep's fallback, the losses' plain module calls) ends with the same parameters and metrics."""
    config = compose_config("logger=none", "collector.total_frames=4096", "collector.frames_per_batch=1024",
                            "eval.interval=2048", "eval.episodes=2", *overrides)

    def run(folder):
        folder.mkdir()
        metrics = train(config, folder, make_logger=Logger)
        return metrics, load_checkpoint(folder / "checkpoint.pt")["loss"]

    fast_metrics, fast = run(tmp_path / "fast")
    monkeypatch.setattr(tensor_calls, "module_calls", lambda module, step: None)
    monkeypatch.setattr(policy_step, "module_calls", lambda module, step: None)
    monkeypatch.setattr(tensor_calls, "_cache", weakref.WeakKeyDictionary())
    slow_metrics, slow = run(tmp_path / "slow")
    assert fast.keys() == slow.keys() and all(torch.equal(fast[key], slow[key]) for key in fast)
    assert {k: v for k, v in fast_metrics.items() if "seconds" not in k} == \
        {k: v for k, v in slow_metrics.items() if "seconds" not in k}
