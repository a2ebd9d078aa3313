"""The examples of the seed PPOLoss / LossModule documents, run with rlexp imports.

torchrl helpers are replaced by their tensordict equivalents: ``SafeModule`` and ``ValueOperator``
by ``TensorDictModule`` (the value operator writes ``state_value``), ``ProbabilisticActor`` by
``ProbabilisticTensorDictSequential`` + ``ProbabilisticTensorDictModule``, ``TanhNormal`` by
``rlexp.modules.distributions.TanhNormal`` (bounds [-1, 1]), and ``spec.rand`` by a uniform draw.
As in torchrl 0.14.1 (spec 10.1), the stored log-prob key is ``action_log_prob``, not ``sample_log_prob``.
"""

from dataclasses import dataclass

import torch
from tensordict import TensorDict
from tensordict.nn import (
    NormalParamExtractor,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from torch import nn

from rlexp.modules.distributions import TanhNormal
from rlexp.objectives import LossModule, PPOLoss

N_ACT, N_OBS = 4, 3


def seed_actor_and_value():
    base_layer = nn.Linear(N_OBS, 5)
    net = nn.Sequential(base_layer, nn.Linear(5, 2 * N_ACT), NormalParamExtractor())
    module = TensorDictModule(net, in_keys=["observation"], out_keys=["loc", "scale"])
    actor = ProbabilisticTensorDictSequential(
        module, ProbabilisticTensorDictModule(in_keys=["loc", "scale"], out_keys=["action"],
                                              distribution_class=TanhNormal, return_log_prob=True))
    value = TensorDictModule(nn.Sequential(base_layer, nn.Linear(5, 1)), in_keys=["observation"],
                             out_keys=["state_value"])
    return actor, value


def test_ppo_loss_tensordict_example():
    torch.manual_seed(0)
    actor, value = seed_actor_and_value()
    loss = PPOLoss(actor, value)
    batch = [2]
    action = torch.rand(*batch, N_ACT) * 2 - 1
    data = TensorDict({
        "observation": torch.randn(*batch, N_OBS), "action": action,
        "action_log_prob": torch.randn_like(action[..., 1]),
        ("next", "done"): torch.zeros(*batch, 1, dtype=torch.bool),
        ("next", "terminated"): torch.zeros(*batch, 1, dtype=torch.bool),
        ("next", "reward"): torch.randn(*batch, 1), ("next", "observation"): torch.randn(*batch, N_OBS),
    }, batch)
    out = loss(data)
    assert {"entropy", "loss_critic", "loss_entropy", "loss_objective"} <= set(out.keys())
    assert {"kl_approx", "explained_variance"} <= set(out.keys())  # extra in 0.14.1 (spec 10.1.3)
    assert out.batch_size == torch.Size([]) and all(out[k].shape == () for k in out.keys() if k.startswith("loss_"))


def test_ppo_loss_keyword_example():
    torch.manual_seed(0)
    actor, value = seed_actor_and_value()
    loss = PPOLoss(actor, value)
    loss.set_keys(sample_log_prob="sampleLogProb")
    _ = loss.select_out_keys("loss_objective")
    batch = [2]
    action = torch.rand(*batch, N_ACT) * 2 - 1
    loss_objective = loss(
        observation=torch.randn(*batch, N_OBS), action=action,
        sampleLogProb=torch.randn_like(action[..., 1]) / 10,
        next_done=torch.zeros(*batch, 1, dtype=torch.bool),
        next_terminated=torch.zeros(*batch, 1, dtype=torch.bool),
        next_reward=torch.randn(*batch, 1), next_observation=torch.randn(*batch, N_OBS))
    assert isinstance(loss_objective, torch.Tensor) and loss_objective.shape == ()
    loss_objective.backward()
    assert next(actor.parameters()).grad is not None


def test_loss_module_accepted_keys_example():
    # The seed's field lacks a type annotation, which makes it no dataclass field (spec 10.3); annotated here.
    class MyLoss(LossModule):
        @dataclass
        class _AcceptedKeys:
            action: str = "action"

        def _forward_value_estimator_keys(self, **kwargs) -> None:
            pass

    loss = MyLoss()
    loss.set_keys(action="action2")
    assert loss.tensor_keys.action == "action2"
