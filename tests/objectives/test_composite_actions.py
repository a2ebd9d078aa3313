"""Composite action distributions (several action heads) in the PPO losses and GRPO, against the formulas.

The actor has a categorical head ``"head_a"`` and a two-dimensional Normal head ``("nested", "head_b")``
(tensordict's ``CompositeDistribution``). The reference rebuilds both heads from the network's outputs
with torch's distributions: the joint log-prob is the sum of the heads' log-probs (the Normal's summed
over its two dims), the importance weight uses the joint, and the entropy bonus is per head.
"""

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import (
    CompositeDistribution,
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from torch import distributions as D
from torch import nn

from rlexp.objectives import ClipPPOLoss, GRPOLoss, KLPENPPOLoss, PPOLoss

TOL = {"rtol": 1e-4, "atol": 1e-5}
OBS, N_ACT, ACT_DIM, B = 3, 4, 2, 7
HEAD_B = ("nested", "head_b")
LOG_PROB_KEYS = ["head_a_log_prob", ("nested", "head_b_log_prob")]


class _Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Linear(OBS, N_ACT + ACT_DIM)
        self.log_std = nn.Parameter(torch.tensor([-0.2, 0.3]))

    def forward(self, obs):
        out = self.net(obs)
        loc = out[..., N_ACT:]
        return out[..., :N_ACT], loc, self.log_std.exp().expand_as(loc)


def make_actor(seed=0):
    torch.manual_seed(seed)
    heads = _Heads()
    params = TensorDictModule(heads, in_keys=["observation"], out_keys=[
        ("params", "head_a", "logits"), ("params", "head_b", "loc"), ("params", "head_b", "scale")])
    prob = ProbabilisticTensorDictModule(
        in_keys=["params"], out_keys=["head_a", HEAD_B], distribution_class=CompositeDistribution,
        distribution_kwargs={"distribution_map": {"head_a": D.Categorical, "head_b": D.Normal},
                             "name_map": {"head_a": "head_a", "head_b": HEAD_B}},
        return_log_prob=True)
    critic = TensorDictModule(nn.Linear(OBS, 1), in_keys=["observation"], out_keys=["state_value"])
    return heads, ProbabilisticTensorDictSequential(params, prob), critic


def make_batch(actor, seed=1):
    gen = torch.Generator().manual_seed(seed)
    td = TensorDict({"observation": torch.randn(B, OBS, generator=gen)}, [B])
    with torch.no_grad():
        actor(td)
        # Perturbed stored log-probs and parameters, so ratios and KL are not trivially 1 and 0.
        for key in LOG_PROB_KEYS:
            td[key] = td[key] + 0.3 * torch.randn(td[key].shape, generator=gen)
        td["params", "head_a", "logits"] += 0.4 * torch.randn(B, N_ACT, generator=gen)
        td["params", "head_b", "loc"] += 0.4 * torch.randn(B, ACT_DIM, generator=gen)
    td["advantage"] = torch.randn(B, 1, generator=gen)
    td["value_target"] = torch.randn(B, 1, generator=gen)
    td["next"] = TensorDict({"observation": torch.randn(B, OBS, generator=gen),
                             "reward": torch.randn(B, 1, generator=gen),
                             "done": torch.zeros(B, 1, dtype=torch.bool)}, [B])
    return td


def reference_terms(heads, td):
    """Per-sample ``[B, 1]`` log-weight, per-head entropies ``[B]`` and the two head distributions."""
    logits, loc, scale = heads(td["observation"])
    cat, normal = D.Categorical(logits=logits), D.Normal(loc, scale)
    log_prob = cat.log_prob(td["head_a"]) + normal.log_prob(td[HEAD_B]).sum(-1)
    old = td["head_a_log_prob"] + td["nested", "head_b_log_prob"].sum(-1)
    return (log_prob - old).unsqueeze(-1), cat.entropy(), normal.entropy().sum(-1), (cat, normal)


def test_keys_come_from_the_actor_and_in_keys_list_every_head():
    heads, actor, critic = make_actor()
    loss = ClipPPOLoss(actor, critic)
    assert loss.tensor_keys.sample_log_prob == LOG_PROB_KEYS
    assert loss.tensor_keys.action == ["head_a", HEAD_B]
    assert {"head_a", HEAD_B, *LOG_PROB_KEYS, "observation"} <= set(loss.in_keys)


@pytest.mark.parametrize("loss_kind", ["ppo", "clip"])
def test_ppo_losses_sum_head_log_probs_and_report_entropy_per_head(loss_kind):
    heads, actor, critic = make_actor()
    td = make_batch(actor)
    cls = {"ppo": PPOLoss, "clip": ClipPPOLoss}[loss_kind]
    loss = cls(actor, critic, entropy_coeff=0.03)
    out = loss(td)
    log_w, ent_a, ent_b, _ = reference_terms(heads, td)
    adv = td["advantage"]
    if loss_kind == "ppo":
        objective = -log_w.exp() * adv
    else:
        clipped = log_w.clamp(math.log(0.8), math.log(1.2))
        objective = -torch.min(log_w.exp() * adv, clipped.exp() * adv)
        torch.testing.assert_close(out["clip_fraction"], (clipped != log_w).float().mean())
    torch.testing.assert_close(out["loss_objective"], objective.mean(), **TOL)
    torch.testing.assert_close(out["kl_approx"], (-log_w).mean().detach(), **TOL)
    torch.testing.assert_close(out["entropy"], (ent_a + ent_b).mean().detach(), **TOL)
    torch.testing.assert_close(out["loss_entropy"], (-0.03 * (ent_a + ent_b)).mean(), **TOL)
    per_head = out["composite_entropy"]
    torch.testing.assert_close(per_head["head_a_entropy"], ent_a.unsqueeze(-1).detach(), **TOL)
    torch.testing.assert_close(per_head["nested", "head_b_entropy"].sum(-1), ent_b.unsqueeze(-1).detach(), **TOL)
    # Gradients reach both heads' parameters through the joint log-prob.
    out["loss_objective"].backward()
    assert heads.net.weight.grad.abs().sum() > 0 and heads.log_std.grad.abs().sum() > 0


@pytest.mark.parametrize("key_style", ["entropy", "log_prob"])
def test_per_head_entropy_coefficients(key_style):
    heads, actor, critic = make_actor()
    td = make_batch(actor)
    suffix = "_entropy" if key_style == "entropy" else "_log_prob"
    coeffs = {"head_a" + suffix: 0.02, ("nested", "head_b" + suffix): 0.5}
    out = PPOLoss(actor, critic, entropy_coeff=coeffs)(td)
    _, ent_a, ent_b, _ = reference_terms(heads, td)
    torch.testing.assert_close(out["loss_entropy"], (-0.02 * ent_a - 0.5 * ent_b).mean(), **TOL)
    with pytest.raises(KeyError, match="Missing entropy coeff for head"):
        PPOLoss(actor, critic, entropy_coeff={"head_a_entropy": 0.1})(td)
    with pytest.raises(TypeError, match="entropy_coeff must be a float or a Mapping"):
        PPOLoss(actor, critic, entropy_coeff="0.1")


def test_klpen_kl_is_a_monte_carlo_mean_of_joint_log_probs():
    heads, actor, critic = make_actor()
    td = make_batch(actor)
    loss = KLPENPPOLoss(actor, critic, samples_mc_kl=5, beta=0.7, entropy_bonus=False)
    torch.manual_seed(3)
    out = loss(td)
    log_w, _, _, (cat, normal) = reference_terms(heads, td)
    prev_cat = D.Categorical(logits=td["params", "head_a", "logits"])
    prev_normal = D.Normal(td["params", "head_b", "loc"], td["params", "head_b", "scale"])
    torch.manual_seed(3)
    x_a, x_b = prev_cat.sample((5,)), prev_normal.sample((5,))
    joint = lambda c, n: c.log_prob(x_a) + n.log_prob(x_b).sum(-1)  # noqa: E731
    kl = (joint(prev_cat, prev_normal) - joint(cat, normal)).mean(0).unsqueeze(-1)
    torch.testing.assert_close(out["kl"], kl.detach(), **TOL)
    torch.testing.assert_close(out["loss_objective"], (-(log_w.exp() * td["advantage"] - 0.7 * kl)).mean(), **TOL)


def test_tensor_log_prob_with_composite_actor_warns_and_uses_the_joint():
    heads, actor, critic = make_actor()
    td = make_batch(actor)
    td["joint_log_prob"] = td["head_a_log_prob"] + td["nested", "head_b_log_prob"].sum(-1)
    loss = PPOLoss(actor, critic)
    loss.set_keys(sample_log_prob="joint_log_prob")
    with pytest.warns(UserWarning, match="composite distribution, yet your log-probability is a tensor"):
        out = loss(td)
    log_w = reference_terms(heads, td)[0]
    torch.testing.assert_close(out["loss_objective"], (-log_w.exp() * td["advantage"]).mean(), **TOL)


def test_missing_head_log_prob_is_named():
    _, actor, critic = make_actor()
    td = make_batch(actor).exclude(("nested", "head_b_log_prob"))
    with pytest.raises(KeyError, match="Couldn't find the log-prob"):
        ClipPPOLoss(actor, critic)(td)


def test_grpo_uses_the_joint_log_prob_and_marks_a_nan_head_invalid():
    heads, actor, _ = make_actor()
    td = make_batch(actor)
    td["nested", "head_b_log_prob"][2, 1] = float("nan")  # sample 2 is invalid
    out = GRPOLoss(actor, clip_epsilon=0.2, entropy_coeff=0.05, kl_to_inference_coeff=0.1)(td)
    log_w, ent_a, ent_b, _ = reference_terms(heads, td)
    valid = torch.ones(B, dtype=torch.bool)
    valid[2] = False
    log_w = torch.where(valid.unsqueeze(-1), log_w, 0.0)
    adv = td["advantage"]
    clipped = log_w.clamp(math.log(0.8), math.log(1.2))
    objective = -torch.min(log_w.exp() * adv, clipped.exp() * adv)
    torch.testing.assert_close(out["loss_objective"], objective[valid].mean(), **TOL)
    torch.testing.assert_close(out["entropy"], (ent_a + ent_b).mean().detach(), **TOL)
    torch.testing.assert_close(out["loss_entropy"], (-0.05 * (ent_a + ent_b))[valid].mean(), **TOL)
    d = torch.where(valid, -log_w.squeeze(-1), 0.0)  # other - current with other = the stored joint
    torch.testing.assert_close(out["kl_to_inference"], (d.expm1() - d).mean().detach(), **TOL)
    assert set(out["composite_entropy"].keys(True, True)) == {"head_a_entropy", ("nested", "head_b_entropy")}
