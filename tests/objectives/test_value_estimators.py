"""GAE / TD0 / TD1 / TD(lambda) modules: keys, value-network calls, time dims and options (spec 3)."""

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torch import nn

from rlexp.objectives.value import GAE, TD0Estimator, TD1Estimator, TDLambdaEstimator
from rlexp.registry import ConfigError, value_estimators

TOL = {"rtol": 1e-4, "atol": 1e-5}
B, T, OBS = 3, 9, 4


def make_critic(seed=0):
    torch.manual_seed(seed)
    return TensorDictModule(nn.Linear(OBS, 1), in_keys=["observation"], out_keys=["state_value"])


def make_rollout(ref, seed=0, batch=(B,), steps=T):
    _, _, reward, done, terminated = ref.rollout(*batch, steps=steps, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    shape = (*batch, steps)
    return TensorDict({
        "observation": torch.randn(*shape, OBS, generator=gen),
        "next": {"observation": torch.randn(*shape, OBS, generator=gen), "reward": reward, "done": done,
                 "terminated": terminated},
    }, list(shape))


def critic_values(critic, td):
    with torch.no_grad():
        return critic.module(td["observation"]), critic.module(td["next", "observation"])


def expected(ref, name, td, value, next_value, gamma=0.9, lmbda=0.8):
    r, d, k = td["next", "reward"], td["next", "done"], td["next", "terminated"]
    if name == "gae":
        return ref.gae(gamma, lmbda, value, next_value, r, d, k)[1]
    if name == "td0":
        return ref.td0(gamma, next_value, r, k)
    if name == "td1":
        return ref.td1(gamma, next_value, r, d, k)
    return ref.td_lambda(gamma, lmbda, next_value, r, d, k)


def build(name, critic, **kwargs):
    cls = {"gae": GAE, "td0": TD0Estimator, "td1": TD1Estimator, "td_lambda": TDLambdaEstimator}[name]
    if name in ("gae", "td_lambda"):
        kwargs.setdefault("lmbda", 0.8)
    return cls(gamma=0.9, value_network=critic, **kwargs)


@pytest.mark.parametrize("name", ["gae", "td0", "td1", "td_lambda"])
def test_defaults_match_reference_and_write_values(ref, name):
    critic = make_critic()
    td = make_rollout(ref)
    td["state_value"] = torch.full((B, T, 1), 123.0)  # stale values are overwritten by default
    estimator = build(name, critic)
    out = estimator(td)
    assert out is td
    value, next_value = critic_values(critic, td)
    target = expected(ref, name, td, value, next_value)
    torch.testing.assert_close(td["value_target"], target, **TOL)
    torch.testing.assert_close(td["advantage"], target - value, **TOL)
    torch.testing.assert_close(td["state_value"], value)
    torch.testing.assert_close(td["next", "state_value"], next_value)
    assert not td["advantage"].requires_grad and not td["value_target"].requires_grad
    assert estimator.differentiable is False
    assert estimator.gamma.dtype == torch.float32 and float(estimator.gamma) == pytest.approx(0.9)
    assert estimator.out_keys == ["advantage", "value_target"]
    assert set(estimator.in_keys) == {"observation", ("next", "observation"), ("next", "reward"),
                                      ("next", "done"), ("next", "terminated")}


@pytest.mark.parametrize("name", ["gae", "td0", "td1", "td_lambda"])
def test_shifted_false_accepted_and_true_refused_alike(ref, name):
    critic = make_critic()
    td = make_rollout(ref)
    build(name, critic, shifted=False)(td)
    value, next_value = critic_values(critic, td)
    torch.testing.assert_close(td["value_target"], expected(ref, name, td, value, next_value), **TOL)
    cls_name = type(build(name, critic)).__name__
    with pytest.raises(NotImplementedError, match=rf"{cls_name}\(shifted=True\) is not supported.*shifted=False"):
        build(name, critic, shifted=True)


@pytest.mark.parametrize("name", ["gae", "td0", "td1", "td_lambda"])
def test_nan_next_observation_replaced_by_root_observation(ref, name):
    critic = make_critic()
    td = make_rollout(ref)
    td["next", "terminated"][0, 3] = td["next", "done"][0, 3] = True  # terminal: V' is masked out
    td["next", "done"][1, 5], td["next", "terminated"][1, 5] = True, False  # truncation: V' is bootstrapped
    for b, t in ((0, 3), (1, 5)):
        td["next", "observation"][b, t] = float("nan")
    build(name, critic)(td)
    assert torch.isnan(td["next", "observation"]).any()  # the caller's data is left as it was
    filled = td.clone()
    filled["next", "observation"] = torch.where(td["next", "observation"].isnan(), td["observation"],
                                                td["next", "observation"])
    value, next_value = critic_values(critic, filled)
    target = expected(ref, name, filled, value, next_value)
    assert torch.isfinite(td["advantage"]).all()
    torch.testing.assert_close(td["value_target"], target, **TOL)


def test_tensor_keys_defaults():
    keys = GAE(gamma=0.9, lmbda=0.9, value_network=None).tensor_keys
    assert (keys.advantage, keys.value_target, keys.value, keys.reward, keys.done, keys.terminated,
            keys.steps_to_next_obs, keys.sample_log_prob) == (
        "advantage", "value_target", "state_value", "reward", "done", "terminated", "steps_to_next_obs",
        "action_log_prob")


def test_skip_existing_and_no_value_network(ref):
    td = make_rollout(ref)
    value, next_value = torch.randn(B, T, 1), torch.randn(B, T, 1)
    td["state_value"], td["next", "state_value"] = value, next_value
    GAE(gamma=0.9, lmbda=0.8, value_network=make_critic(), skip_existing=True)(td)
    torch.testing.assert_close(td["value_target"], expected(ref, "gae", td, value, next_value), **TOL)
    plain = td.exclude("advantage", "value_target")
    TD1Estimator(gamma=0.9, value_network=None)(plain)
    torch.testing.assert_close(plain["value_target"], expected(ref, "td1", td, value, next_value), **TOL)
    missing = make_rollout(ref)
    with pytest.raises(ValueError, match="The tensor with key state_value is missing, and no value network"):
        GAE(gamma=0.9, lmbda=0.8, value_network=None)(missing)
    missing["state_value"] = value
    with pytest.raises(ValueError, match=r"The tensor with key \('next', 'state_value'\) is missing"):
        GAE(gamma=0.9, lmbda=0.8, value_network=None)(missing)
    with pytest.raises(KeyError, match=r"The tensor with key \('next', 'state_value'\) is missing"):
        TD0Estimator(gamma=0.9, value_network=None)(missing)
    with pytest.raises(RuntimeError, match=r"at least one dimension.*batch_size = torch.Size\(\[\]\)"):
        GAE(gamma=0.9, lmbda=0.8, value_network=None)(missing[0, 0])


def test_time_dimension_choices(ref):
    critic = make_critic()
    td = make_rollout(ref)
    build("gae", critic)(td)
    reference = td["advantage"]
    swapped = make_rollout(ref).transpose(0, 1)  # [T, B]
    build("gae", critic, time_dim=0)(swapped)
    torch.testing.assert_close(swapped["advantage"].transpose(0, 1), reference, **TOL)
    explicit = make_rollout(ref).transpose(0, 1)
    build("gae", critic)(explicit, time_dim=0)
    torch.testing.assert_close(explicit["advantage"].transpose(0, 1), reference, **TOL)
    named = make_rollout(ref).transpose(0, 1)
    named.refine_names("time", None)
    build("td_lambda", critic)(named)
    td_l = make_rollout(ref)
    build("td_lambda", critic)(td_l)
    torch.testing.assert_close(named["advantage"].transpose(0, 1), td_l["advantage"], **TOL)


def test_steps_to_next_obs_discounts_per_step(ref):
    critic = make_critic()
    td = make_rollout(ref)
    steps = torch.randint(1, 4, (B, T))
    td["steps_to_next_obs"] = steps
    build("gae", critic)(td)
    value, next_value = critic_values(critic, td)
    gamma = 0.9 ** steps.unsqueeze(-1).float()
    torch.testing.assert_close(td["value_target"], expected(ref, "gae", td, value, next_value, gamma=gamma), **TOL)


def test_average_gae_standardises_advantage_only(ref):
    critic = make_critic()
    td = make_rollout(ref)
    build("gae", critic, average_gae=True)(td)
    value, next_value = critic_values(critic, td)
    target = expected(ref, "gae", td, value, next_value)
    raw = target - value
    torch.testing.assert_close(td["value_target"], target, **TOL)
    torch.testing.assert_close(td["advantage"], (raw - raw.mean()) / raw.std(), **TOL)


@pytest.mark.parametrize("name", ["td0", "td1", "td_lambda"])
def test_average_rewards_written_back(ref, name):
    critic = make_critic()
    td = make_rollout(ref)
    reward = td["next", "reward"].clone()
    build(name, critic, average_rewards=True)(td)
    standardised = (reward - reward.mean()) / reward.std()
    torch.testing.assert_close(td["next", "reward"], standardised, **TOL)
    value, next_value = critic_values(critic, td)
    torch.testing.assert_close(td["value_target"], expected(ref, name, td, value, next_value), **TOL)


def test_auto_reset_env(ref):
    critic = make_critic()
    td = make_rollout(ref)
    truncated = td["next", "done"] & ~td["next", "terminated"]
    td["next", "truncated"] = truncated
    build("gae", critic, auto_reset_env=True)(td)
    value, next_value = critic_values(critic, td)
    reward = td["next", "reward"] + 0.9 * value * truncated
    done = td["next", "done"]
    adv, target = ref.gae(0.9, 0.8, value, next_value, reward, done, done)
    torch.testing.assert_close(td["advantage"], adv, **TOL)


def test_differentiable_flows_to_inputs_not_params(ref):
    critic = make_critic()
    td = make_rollout(ref)
    obs = td["observation"].requires_grad_(True)
    build("gae", critic, differentiable=True)(td)
    assert td["advantage"].requires_grad
    assert td["next", "state_value"].requires_grad  # stored before being detached
    td["advantage"].sum().backward()
    assert obs.grad is not None and obs.grad.abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())
    assert all(p.requires_grad for p in critic.parameters())  # held out only during the call


def test_explicit_params_are_used_and_detached(ref):
    critic = make_critic()
    other = make_critic(seed=5)
    td = make_rollout(ref)
    params = TensorDict.from_module(other)
    build("td0", critic, differentiable=True)(td, params=params)
    value, next_value = critic_values(other, td)
    torch.testing.assert_close(td["value_target"], expected(ref, "td0", td, value, next_value), **TOL)
    assert not td["value_target"].requires_grad
    torch.testing.assert_close(critic_values(critic, td)[0], critic.module(td["observation"]).detach())


def test_is_init_of_next_is_or_ed_with_root(ref):
    net = TensorDictModule(lambda obs, is_init: is_init.float(), in_keys=["observation", "is_init"],
                           out_keys=["state_value"])
    td = make_rollout(ref)
    root = torch.rand(B, T, 1) < 0.5
    nxt = torch.rand(B, T, 1) < 0.5
    td["is_init"], td["next", "is_init"] = root, nxt
    TD0Estimator(gamma=0.9, value_network=net)(td)
    torch.testing.assert_close(td["next", "state_value"], (root | nxt).float())
    assert torch.equal(td["next", "is_init"], nxt)  # the input's flag is untouched
    del td["next", "is_init"]
    TD0Estimator(gamma=0.9, value_network=net)(td)
    torch.testing.assert_close(td["next", "state_value"], root.float())  # missing in "next": the root's


def test_set_keys_and_errors(ref):
    critic = TensorDictModule(nn.Linear(OBS, 1), in_keys=["observation"], out_keys=["v"])
    estimator = GAE(gamma=0.9, lmbda=0.8, value_network=critic)
    with pytest.raises(KeyError, match=r"value key 'state_value' not found in value network out_keys \['v'\]"):
        estimator.set_keys(value="state_value")  # not an output of the value network
    estimator.set_keys(value="v", advantage="adv", reward="rew")
    td = make_rollout(ref)
    td["next", "rew"] = td["next"].pop("reward")
    estimator(td)
    assert "adv" in td.keys() and "v" in td.keys() and estimator.out_keys == ["adv", "value_target"]
    assert ("next", "rew") in estimator.in_keys
    with pytest.raises(KeyError, match="not_a_key is not an accepted tensordict key for advantages"):
        estimator.set_keys(not_a_key="x")
    with pytest.raises(ValueError, match="tensordict keys cannot be None"):
        estimator.set_keys(advantage=None)
    with pytest.raises(ValueError, match="key name must be of type NestedKey"):
        estimator.set_keys(advantage=3)
    with pytest.raises(RuntimeError, match=r"Setting 'advantage_key' via constructor is deprecated, use "
                                           r"\.set_keys\(advantage='some_key'\) instead"):
        GAE(gamma=0.9, lmbda=0.8, value_network=critic, advantage_key="a")
    with pytest.raises(ValueError, match="shifted must be a boolean, got 'no'"):
        GAE(gamma=0.9, lmbda=0.8, value_network=critic, shifted="no")
    with pytest.raises(RuntimeError):
        estimator(TensorDict({}, []))


def test_value_estimate_returns_target_without_writing_advantage(ref):
    critic = make_critic()
    td = make_rollout(ref)
    target = build("td_lambda", critic).value_estimate(td)
    value, next_value = critic_values(critic, td)
    torch.testing.assert_close(target, expected(ref, "td_lambda", td, value, next_value), **TOL)
    assert "advantage" not in td.keys()


def test_registry_builds_estimators():
    critic = make_critic()
    gae = value_estimators.build({"name": "gae", "gamma": 0.95, "lmbda": 0.9, "average_gae": True},
                                 value_network=critic)
    assert isinstance(gae, GAE) and gae.average_gae and float(gae.lmbda) == pytest.approx(0.9)
    assert isinstance(value_estimators.build({"name": "td0", "gamma": 0.9}, value_network=critic), TD0Estimator)
    assert isinstance(value_estimators.build({"name": "td1", "gamma": 0.9}, value_network=critic), TD1Estimator)
    tdl = value_estimators.build({"name": "td_lambda", "gamma": 0.9, "lmbda": 0.5}, value_network=critic)
    assert isinstance(tdl, TDLambdaEstimator)
    with pytest.raises(ConfigError, match="lmbda"):
        value_estimators.build({"name": "td0", "gamma": 0.9, "lmbda": 0.5}, value_network=critic)
