"""LossModule helper API (spec 1): keys, value estimators, reduction/masks, functional params, buffers."""

import copy as copy_module
from dataclasses import dataclass

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, TensorDictModule
from tensordict.nn.probabilistic import interaction_type
from torch import nn

from rlexp.modules.recurrent_mode import recurrent_mode
from rlexp.objectives import ClipPPOLoss, LossModule, PPOLoss, ValueEstimators, add_random_module
from rlexp.objectives.utils import find_loss_mask, reduce_loss
from rlexp.objectives.value import GAE, TD0Estimator, TD1Estimator, TDLambdaEstimator


class KeyedLoss(LossModule):
    @dataclass
    class _AcceptedKeys:
        action: str = "action"
        untyped = "not_a_field"

    default_keys = _AcceptedKeys


class NoDefaultsLoss(LossModule):
    @dataclass
    class _AcceptedKeys:
        action: str = "action"


def actor_critic(dropout=False):
    from tensordict.nn import ProbabilisticTensorDictModule, ProbabilisticTensorDictSequential

    torch.manual_seed(0)
    layers = [nn.Linear(3, 2)] + ([nn.Dropout(0.1)] if dropout else [])
    actor = ProbabilisticTensorDictSequential(
        TensorDictModule(nn.Sequential(*layers), in_keys=["observation"], out_keys=["logits"]),
        ProbabilisticTensorDictModule(in_keys=["logits"], out_keys=["action"],
                                      distribution_class=torch.distributions.Categorical, return_log_prob=True))
    critic = TensorDictModule(nn.Linear(3, 1), in_keys=["observation"], out_keys=["state_value"])
    return actor, critic


def test_set_keys_fields_defaults_and_errors():
    loss = KeyedLoss()
    loss.set_keys(action="act")
    assert loss.tensor_keys.action == "act"
    loss.set_keys(action=None)
    assert loss.tensor_keys.action == "action"
    with pytest.raises(ValueError, match=r"untyped is not an accepted tensordict key. Accepted keys are: \["):
        loss.set_keys(untyped="x")  # no annotation: not a dataclass field (spec 10.3)
    with pytest.raises(AttributeError):
        NoDefaultsLoss().set_keys(action=None)
    assert LossModule.default_value_estimator is None and LossModule().functional is True


def test_forward_and_loss_methods_run_in_loss_context():
    seen = {}

    class Probe(LossModule):
        def forward(self, tensordict):
            seen["forward"] = (interaction_type(), recurrent_mode())
            return tensordict

        def actor_loss(self):
            seen["actor_loss"] = (interaction_type(), recurrent_mode())

        def loss_value(self):
            seen["loss_value"] = (interaction_type(), recurrent_mode())

    probe = Probe()
    probe(TensorDict({}, []))
    probe.actor_loss()
    probe.loss_value()
    assert seen["forward"] == seen["actor_loss"] == (InteractionType.DETERMINISTIC, True)
    assert seen["loss_value"] == (None, None)
    assert recurrent_mode() is None and interaction_type() is None


def test_value_estimators_enum():
    assert ValueEstimators.TD0.value == "Bootstrapped TD (1-step return)"
    assert ValueEstimators.TDLambda.value == "TD(lambda)"
    assert [m.name for m in ValueEstimators] == ["TD0", "TD1", "TDLambda", "GAE", "MAGAE", "VTrace"]


@pytest.mark.parametrize("value_type, cls, lmbda", [
    (ValueEstimators.TD0, TD0Estimator, None), (ValueEstimators.TD1, TD1Estimator, None),
    (ValueEstimators.TDLambda, TDLambdaEstimator, 0.95), (ValueEstimators.GAE, GAE, 0.95),
    ("td0", TD0Estimator, None), ("TDLambda", TDLambdaEstimator, 0.95), ("gae", GAE, 0.95),
])
def test_make_value_estimator_from_type_uses_registry_defaults(value_type, cls, lmbda):
    actor, critic = actor_critic()
    loss = PPOLoss(actor, critic)
    loss.make_value_estimator(value_type)
    estimator = loss.value_estimator
    assert type(estimator) is cls and estimator.value_network is critic
    assert float(estimator.gamma) == pytest.approx(0.99) and estimator.differentiable is True
    if lmbda is None:
        assert not hasattr(estimator, "lmbda")
    else:
        assert float(estimator.lmbda) == pytest.approx(lmbda)
    assert loss.value_type.name == {"TD0Estimator": "TD0", "TD1Estimator": "TD1", "TDLambdaEstimator": "TDLambda",
                                    "GAE": "GAE"}[cls.__name__]
    loss.make_value_estimator(value_type, gamma=0.5)
    assert float(loss.value_estimator.gamma) == pytest.approx(0.5)


def test_make_value_estimator_instance_class_and_errors():
    actor, critic = actor_critic()
    loss = ClipPPOLoss(actor, critic)
    loss.set_keys(value_target="vt", advantage="adv")
    given = GAE(gamma=0.9, lmbda=0.5, value_network=critic)
    loss.make_value_estimator(given)
    assert loss.value_estimator is given and loss.value_type is GAE  # the class, as torchrl stores it
    assert given.tensor_keys.value_target == "vt" and given.tensor_keys.advantage == "adv"
    loss.make_value_estimator(TD1Estimator, gamma=0.7, value_network=critic)
    assert isinstance(loss.value_estimator, TD1Estimator) and float(loss.value_estimator.gamma) == pytest.approx(0.7)
    assert loss.value_type is TD1Estimator
    assert loss.value_estimator.tensor_keys.value_target == "vt"
    loss.set_keys(value_target="target2")
    assert loss.value_estimator.tensor_keys.value_target == "target2"  # later renames are forwarded
    with pytest.raises(NotImplementedError, match="Value type .*VTrace.* is not implemented for loss ClipPPOLoss"):
        loss.make_value_estimator(ValueEstimators.VTrace)
    with pytest.raises(NotImplementedError, match=r"Unknown value type 'montecarlo'; use one of \["):
        loss.make_value_estimator("montecarlo")
    replacement = TD0Estimator(gamma=0.1, value_network=critic)
    loss.value_estimator = replacement
    assert loss.value_estimator is replacement


def test_lazy_default_estimator():
    actor, critic = actor_critic()
    loss = ClipPPOLoss(actor, critic)
    assert loss._value_estimator is None and loss.value_type == ValueEstimators.GAE
    assert isinstance(loss.value_estimator, GAE) and loss.value_estimator.tensor_keys.sample_log_prob == \
        "action_log_prob"


def test_reduce_loss_mask_broadcasting():
    loss = torch.tensor([[1.0, 2.0], [3.0, float("nan")], [5.0, 6.0]])  # [B=3, D=2]
    mask = torch.tensor([True, False, True])
    assert reduce_loss(loss, "mean", mask) == pytest.approx((1 + 2 + 5 + 6) / 4)
    assert reduce_loss(loss, "sum", mask) == pytest.approx(14.0)
    none = reduce_loss(loss, "none", mask)
    assert torch.equal(none, torch.tensor([[1.0, 2.0], [0.0, 0.0], [5.0, 6.0]]))
    column = torch.tensor([2.0, 4.0, 9.0]).unsqueeze(-1)
    assert reduce_loss(column, "mean", mask.unsqueeze(-1)) == pytest.approx(5.5)
    assert reduce_loss(column, "none").shape == (3,)
    assert reduce_loss(column, "mean", torch.zeros(3, dtype=torch.bool)) == 0  # divides by max(count, 1)
    with pytest.raises(ValueError, match=r"A mask of shape \(3, 2\) cannot be applied to a loss of shape \(3,\): "
                                         "the mask has more non-singleton dimensions than the loss"):
        reduce_loss(torch.ones(3), "mean", torch.ones(3, 2, dtype=torch.bool))


def test_find_loss_mask_auto_named_and_disabled():
    td = TensorDict({"collector": {"mask": torch.tensor([True, True, False])},
                     "shifted_valid": torch.tensor([True, False, True]), "valid": torch.tensor([False, True, True])},
                    [3])
    assert find_loss_mask(td, "auto").tolist() == [True, False, False]
    assert find_loss_mask(td, "valid").tolist() == [False, True, True]
    assert find_loss_mask(td, None) is None
    assert find_loss_mask(TensorDict({}, [3]), "auto") is None


def test_convert_to_functional_and_stateful_nets():
    actor, critic = actor_critic()
    loss = PPOLoss(actor, critic)
    params = loss.actor_network_params
    assert {id(p) for p in params.values(True, True)} == {id(p) for p in actor.parameters()}
    assert "actor_network" not in loss._modules and loss.actor_network is actor
    target = loss.target_actor_network_params
    assert all(not t.requires_grad for t in target.values(True, True))
    with torch.no_grad():
        next(actor.parameters()).add_(1.0)
    torch.testing.assert_close(next(iter(target.values(True, True))), next(iter(params.values(True, True))))
    copy = loss.get_stateful_net("actor_network")
    # A copy of the structure holding the stored parameter tensors themselves: initialising it in place
    # initialises the loss.
    assert copy is not actor and copy.module[0] is not actor.module[0]
    assert [id(p) for p in copy.parameters()] == [id(p) for p in params.values(True, True)]
    with torch.no_grad():
        for p in copy.parameters():
            p.fill_(0.25)
    assert all(bool((p == 0.25).all()) for p in actor.parameters())
    independent = copy_module.deepcopy(copy)
    with torch.no_grad():
        for p in independent.parameters():
            p.fill_(-1.5)
    loss.from_stateful_net("actor_network", independent)
    assert all(bool((p == -1.5).all()) for p in actor.parameters())
    assert loss.get_stateful_net("actor_network", copy=False) is actor
    with pytest.raises(RuntimeError, match=r"The keys of params and provided module differ: .*'0'.* are in "
                                           r"self.params and not in the module"):
        loss.from_stateful_net("actor_network", critic)


def test_create_target_params_and_compare_against():
    actor, critic = actor_critic()
    loss = KeyedLoss()
    loss.convert_to_functional(critic, "value_net", create_target_params=True)
    target = loss.target_value_net_params
    with torch.no_grad():
        critic.module.weight.add_(1.0)
    assert not torch.equal(target["module", "weight"], critic.module.weight)  # an independent clone
    shared = KeyedLoss()
    shared.convert_to_functional(critic, "value_net", compare_against=[critic.module.weight])
    stored = shared.value_net_params
    assert not stored["module", "weight"].requires_grad and stored["module", "bias"] is critic.module.bias
    assert {id(p) for p in shared.parameters()} == {id(critic.module.bias)}


def test_non_functional_stateful_net():
    actor, critic = actor_critic()
    loss = PPOLoss(actor, critic, functional=False)
    assert loss.get_stateful_net("actor_network") is actor
    with pytest.raises(RuntimeError):
        loss.get_stateful_net("actor_network", copy=True)


def test_vmap_randomness():
    actor, critic = actor_critic()
    loss = PPOLoss(actor, critic)
    assert loss.vmap_randomness == "error"
    loss.set_vmap_randomness("same")
    assert loss.vmap_randomness == "same"
    with pytest.raises(ValueError, match="Wrong vmap randomness, should be one of 'error', 'same' or "
                                         "'different', got 'sometimes'"):
        loss.set_vmap_randomness("sometimes")
    dropout_actor, _ = actor_critic(dropout=True)
    assert PPOLoss(dropout_actor, critic).vmap_randomness == "different"

    class Noisy(nn.Module):
        def forward(self, x):
            return x + torch.randn_like(x)

    add_random_module(Noisy)
    noisy = TensorDictModule(nn.Sequential(nn.Linear(3, 1), Noisy()), in_keys=["observation"],
                             out_keys=["state_value"])
    assert PPOLoss(actor, noisy).vmap_randomness == "different"


def test_register_coeff_buffer():
    loss = KeyedLoss()
    loss.register_coeff_buffer("coef", 3)
    assert loss.coef.dtype == torch.float32 and loss.coef.shape == () and "coef" in dict(loss.named_buffers())
    loss.register_coeff_buffer("absent", None)
    assert loss.absent is None
    for bad in (True, torch.ones(2), "0.1", [0.1]):
        with pytest.raises(ValueError, match="bad must be a float or a scalar tensor"):
            loss.register_coeff_buffer("bad", bad)
    loss.register_coeff_buffer("wide", 0.1, dtype=torch.float64, device="cpu")
    assert loss.wide.dtype == torch.float64 and float(loss.wide) == 0.1
    loss.register_coeff_buffer("count", 3, dtype=torch.int64)
    assert loss.count.dtype == torch.int64 and int(loss.count) == 3


@pytest.mark.parametrize("bad", [0, 1.5, (), ("mask", 0), ["mask"], b"mask"])
def test_loss_mask_key_rejects_non_keys(bad):
    loss = KeyedLoss()
    with pytest.raises(ValueError, match="loss_mask_key must be 'auto', None or a NestedKey"):
        loss.loss_mask_key = bad
    assert loss.loss_mask_key == "auto"
    for good in ("mask", ("collector", "mask"), ("auto",), None, "auto"):
        loss.loss_mask_key = good
        assert loss.loss_mask_key == good
    td = TensorDict({"auto": torch.tensor([True, False])}, [2])
    loss.loss_mask_key = ("auto",)  # an entry literally named "auto", not the discovery mode
    assert loss._reduce_losses(td, {"loss_x": torch.tensor([[2.0], [8.0]])}, "mean")["loss_x"] == 2.0


def test_reset_parameters_recursive_reaches_functional_networks():
    actor, critic = actor_critic()
    loss = ClipPPOLoss(actor, critic, delay_actor=True)
    before = {name: p.detach().clone() for name, p in loss.named_parameters()}
    target_before = loss.target_actor_network_params.clone()
    torch.manual_seed(1)
    loss.reset_parameters_recursive()
    # The same tensors hold new values, drawn as nn.Linear.reset_parameters draws them.
    torch.manual_seed(1)
    # Network by network in the order they were stored, each with its target parameters right after it.
    fresh_actor, fresh_target, fresh_critic = nn.Linear(3, 2), nn.Linear(3, 2), nn.Linear(3, 1)
    after = dict(loss.named_parameters())
    assert after.keys() == before.keys() and all(not torch.equal(after[k], before[k]) for k in after)
    torch.testing.assert_close(actor.module[0].module[0].weight, fresh_actor.weight)
    torch.testing.assert_close(critic.module.weight, fresh_critic.weight)
    target = loss.target_actor_network_params
    torch.testing.assert_close(target["module", "0", "module", "0", "weight"], fresh_target.weight)
    assert not torch.equal(target["module", "0", "module", "0", "weight"],
                           target_before["module", "0", "module", "0", "weight"])


def test_convert_to_functional_list_of_modules_stacks_them():
    torch.manual_seed(0)
    critics = [TensorDictModule(nn.Linear(3, 1), in_keys=["observation"], out_keys=["state_value"])
               for _ in range(3)]
    loss = KeyedLoss()
    loss.convert_to_functional(critics, "value_net", expand_dim=3)
    params = loss.value_net_params
    assert params.batch_size == (3,) and loss.value_net is critics[0]
    stacked = params["module", "weight"]
    assert isinstance(stacked, nn.Parameter) and stacked.is_leaf  # trained as one new parameter
    assert any(p is stacked for p in loss.parameters())
    for i, critic in enumerate(critics):
        torch.testing.assert_close(params["module", "weight"][i], critic.module.weight.detach())
    with pytest.raises(RuntimeError, match="expand_dim"):
        KeyedLoss().convert_to_functional(critics, "value_net", expand_dim=2)


def test_convert_to_functional_expand_dim_stacks_copies():
    _, critic = actor_critic()
    loss = KeyedLoss()
    loss.convert_to_functional(critic, "value_net", expand_dim=3, compare_against=[critic.module.bias])
    params = loss.value_net_params
    assert params.batch_size == (3,)
    for i in range(3):
        torch.testing.assert_close(params["module", "weight"][i], critic.module.weight.detach())
    assert params["module", "weight"] is not critic.module.weight and params["module", "weight"].requires_grad
    assert not params["module", "bias"].requires_grad  # a detached expansion of the compared parameter


def test_module_casts_keep_networks_and_params_in_sync():
    actor, critic = actor_critic()
    loss = ClipPPOLoss(actor, critic).double()
    assert all(p.dtype == torch.float64 for p in actor.parameters())
    assert {id(p) for p in loss.parameters()} == {id(p) for p in [*actor.parameters(), *critic.parameters()]}
    assert loss.entropy_coeff.dtype == torch.float64
