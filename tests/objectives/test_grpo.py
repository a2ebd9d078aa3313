"""GRPOLoss against the formulas of spec 6.2, written out independently here, and against ClipPPOLoss."""

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import ProbabilisticTensorDictModule, ProbabilisticTensorDictSequential, TensorDictModule
from torch import distributions as D
from torch import nn

from rlexp.modules.distributions import IndependentNormal, TanhNormal
from rlexp.objectives import ClipPPOLoss, GRPOLoss
from rlexp.objectives.value import GAE, GroupRelativeEstimator
from rlexp.registry import ConfigError, losses

TOL = {"rtol": 1e-4, "atol": 1e-5}
OBS, N_ACT, ACT_DIM = 3, 4, 2


class _LocScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.loc = nn.Linear(OBS, ACT_DIM)
        self.log_std = nn.Parameter(torch.full((ACT_DIM,), -0.3))

    def forward(self, obs):
        loc = self.loc(obs)
        return loc, self.log_std.exp().expand_as(loc)


class Actor:
    """A probabilistic actor plus the same distribution built directly from its network (the reference)."""

    def __init__(self, kind: str, seed: int = 0):
        torch.manual_seed(seed)
        self.kind = kind
        if kind == "categorical":
            self.net = nn.Linear(OBS, N_ACT)
            params = TensorDictModule(self.net, in_keys=["observation"], out_keys=["logits"])
            prob = ProbabilisticTensorDictModule(in_keys=["logits"], out_keys=["action"],
                                                 distribution_class=D.Categorical, return_log_prob=True)
        else:
            self.net = _LocScale()
            params = TensorDictModule(self.net, in_keys=["observation"], out_keys=["loc", "scale"])
            prob = ProbabilisticTensorDictModule(
                in_keys=["loc", "scale"], out_keys=["action"], return_log_prob=True,
                distribution_class=IndependentNormal if kind == "normal" else TanhNormal)
        self.module = ProbabilisticTensorDictSequential(params, prob)

    def dist(self, obs):
        if self.kind == "categorical":
            return D.Categorical(logits=self.net(obs))
        loc, scale = self.net(obs)
        if self.kind == "normal":
            return D.Independent(D.Normal(loc, scale), 1)
        return TanhNormal(loc, scale)

    def entropy(self, dist):
        if self.kind == "tanh_normal":  # Monte Carlo with one reparameterised draw (spec 2.3 step 6)
            return -dist.log_prob(dist.rsample((1,))).mean(0)
        return dist.entropy()


def make_batch(actor: Actor, *batch, seed=1, nan_fraction=0.0):
    """Actions from the actor, perturbed stored and reference log-probs, random advantages, some NaN log-probs."""
    gen = torch.Generator().manual_seed(seed)
    td = TensorDict({"observation": torch.randn(*batch, OBS, generator=gen)}, list(batch))
    with torch.no_grad():
        actor.module(td)
    lp = td["action_log_prob"]
    td["action_log_prob"] = lp + 0.5 * torch.randn(lp.shape, generator=gen)
    td["ref_log_prob"] = lp + 0.3 * torch.randn(lp.shape, generator=gen)
    td["action_log_prob"][torch.rand(lp.shape, generator=gen) < nan_fraction] = float("nan")
    td["advantage"] = torch.randn(*batch, 1, generator=gen)
    for key in ("logits", "loc", "scale"):
        td.pop(key, None)
    return td


def reference(actor: Actor, td, *, eps=(0.2, 0.2), entropy_coeff=0.01, aggregation="token_mean",
              kl_mask_threshold=None, kl_to_ref_coeff=None, kl_to_inference_coeff=None, loss_mask=None):
    """Spec 6.2 term by term, with boolean indexing and explicit loops instead of masked reductions."""
    dist = actor.dist(td["observation"])
    cur = dist.log_prob(td["action"])
    prev = td["action_log_prob"]
    valid = ~prev.isnan()
    cur_m = torch.where(valid, cur, torch.zeros(()))
    prev_m = torch.where(valid, prev, torch.zeros(()))
    lw = (cur_m - prev_m).unsqueeze(-1)
    lo, hi = math.log1p(-eps[0]), math.log1p(eps[1])
    out = {"kl_approx": (prev_m - cur_m).sum() / prev.numel(),
           "clip_fraction": ((lw < lo) | (lw > hi)).sum() / lw.numel()}
    if kl_mask_threshold:
        valid = valid & ((cur_m - prev_m) ** 2 / 2 <= kl_mask_threshold)
    w = lw.detach().squeeze(-1)[valid].exp()
    out["ESS"] = w.sum() ** 2 / (w ** 2).sum() / valid.sum()
    adv = td["advantage"]
    terms = {"loss_objective": -torch.min(lw.exp() * adv, lw.clamp(lo, hi).exp() * adv)}
    ent = actor.entropy(dist)
    out["entropy"] = ent.mean()
    terms["loss_entropy"] = -entropy_coeff * ent.unsqueeze(-1)
    for key, term in terms.items():
        if aggregation == "none":
            out[key] = torch.where(valid.unsqueeze(-1), term, torch.zeros(()))
        elif aggregation == "prompt_mean":
            rows = [term[i][valid[i]].sum() / max(int(valid[i].sum()), 1) for i in range(term.shape[0])]
            out[key] = torch.stack(rows).mean().reshape(1 if term.ndim == 3 else ())
        else:
            keep = valid if loss_mask is None else valid & loss_mask
            out[key] = term.squeeze(-1)[keep].sum() / max(int(keep.sum()), 1)

    def k3(other):
        d = torch.where(valid, other, torch.zeros(())) - torch.where(valid, cur_m, torch.zeros(()))
        return (d.exp() - 1 - d).sum() / d.numel()

    if kl_to_ref_coeff:
        out["kl_to_ref"] = k3(td["ref_log_prob"])
        out["loss_kl_to_ref"] = kl_to_ref_coeff * out["kl_to_ref"]
    if kl_to_inference_coeff is not None:
        out["kl_to_inference"] = k3(prev)
        out["loss_kl_to_inference"] = kl_to_inference_coeff * out["kl_to_inference"]
    return out


def total(out):
    return sum(v.sum() for k, v in out.items() if k.startswith("loss_"))


def assert_matches(actor, out, expected, check_grads=True):
    assert set(out.keys()) == set(expected.keys())
    for key, value in expected.items():
        assert out[key].shape == value.shape, key
        torch.testing.assert_close(out[key], value.detach(), **TOL, msg=key)
    if check_grads:
        params = list(actor.module.parameters())
        got = torch.autograd.grad(total(out), params, allow_unused=True)
        want = torch.autograd.grad(total(expected), params, allow_unused=True)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, **TOL)


@pytest.mark.parametrize("kind", ["categorical", "normal", "tanh_normal"])
@pytest.mark.parametrize("aggregation", ["token_mean", "prompt_mean", "none"])
def test_matches_spec_formulas_with_nan_log_probs_asymmetric_clip_and_kl_terms(kind, aggregation):
    actor = Actor(kind)
    td = make_batch(actor, 5, 6, nan_fraction=0.25)
    kwargs = {"kl_to_ref_coeff": 0.3, "kl_to_inference_coeff": 0.7}
    loss = GRPOLoss(actor.module, clip_epsilon=(0.1, 0.3), entropy_coeff=0.02, aggregation=aggregation, **kwargs)
    torch.manual_seed(3)
    out = loss(td)
    torch.manual_seed(3)
    expected = reference(actor, td, eps=(0.1, 0.3), entropy_coeff=0.02, aggregation=aggregation, **kwargs)
    assert_matches(actor, out, expected)
    assert 0 < float(out["ESS"]) <= 1 and float(out["clip_fraction"]) > 0


def test_reduction_none_overrides_aggregation_and_sum_is_still_a_mean():
    actor = Actor("categorical")
    td = make_batch(actor, 4, 5, nan_fraction=0.2)
    none = GRPOLoss(actor.module, reduction="none")(td)
    assert_matches(actor, none, reference(actor, td, aggregation="none"))
    summed = GRPOLoss(actor.module, reduction="sum")(td)
    assert_matches(actor, summed, reference(actor, td, aggregation="token_mean"))


def test_kl_mask_removes_far_samples_from_ess_aggregation_and_kl_but_not_from_clip_stats():
    actor = Actor("normal")
    td = make_batch(actor, 32, nan_fraction=0.1)
    kwargs = {"kl_mask_threshold": 0.05, "kl_to_ref_coeff": 1.0, "kl_to_inference_coeff": 0.0}
    out = GRPOLoss(actor.module, **kwargs)(td)
    expected = reference(actor, td, **kwargs)
    assert_matches(actor, out, expected)
    plain = GRPOLoss(actor.module, kl_to_ref_coeff=1.0, kl_to_inference_coeff=0.0)(td)
    for key in ("clip_fraction", "kl_approx", "entropy"):
        torch.testing.assert_close(out[key], plain[key])
    for key in ("ESS", "loss_objective", "kl_to_ref"):
        assert not torch.allclose(out[key], plain[key]), key


@pytest.mark.parametrize("kind", ["categorical", "tanh_normal"])
@pytest.mark.parametrize("aggregation", ["token_mean", "prompt_mean"])
@pytest.mark.parametrize("eps", [0.2, (0.1, 0.3)])
def test_equals_clip_ppo_on_a_1d_batch(kind, aggregation, eps):
    actor = Actor(kind)
    td = make_batch(actor, 24)
    grpo = GRPOLoss(actor.module, clip_epsilon=eps, entropy_coeff=0.03, aggregation=aggregation)
    clip = ClipPPOLoss(actor.module, None, clip_epsilon=eps, entropy_coeff=0.03)
    torch.manual_seed(5)
    a = grpo(td)
    torch.manual_seed(5)
    b = clip(td)
    params = list(actor.module.parameters())
    for key in ("loss_objective", "clip_fraction", "ESS", "kl_approx", "entropy", "loss_entropy"):
        assert a[key].shape == b[key].shape == (), key
        torch.testing.assert_close(a[key], b[key], **TOL, msg=key)
    for key in ("loss_objective", "loss_entropy"):
        for g, h in zip(torch.autograd.grad(a[key], params, retain_graph=True),
                        torch.autograd.grad(b[key], params, retain_graph=True)):
            torch.testing.assert_close(g, h, **TOL)


def test_bt_batch_ess_is_global_unlike_clip_ppo():
    actor = Actor("categorical")
    td = make_batch(actor, 4, 5)
    assert GRPOLoss(actor.module)(td)["ESS"].shape == ()
    assert ClipPPOLoss(actor.module, None)(td)["ESS"].shape == (5,)


def _padded_rollout(actor: Actor, seed: int, garbage_seed: int):
    """[N, T] batch with a collector mask; padded slots hold NaN log-probs and seed-dependent garbage."""
    td = make_batch(actor, 6, 7, seed=seed)
    lengths = torch.tensor([7, 3, 1, 5, 7, 2])
    mask = torch.arange(7) < lengths[:, None]
    td["collector", "mask"] = mask
    gen = torch.Generator().manual_seed(garbage_seed)
    pad = ~mask
    td["action_log_prob"][pad] = float("nan")
    td["advantage"][pad] = 1e6 * torch.randn(int(pad.sum()), 1, generator=gen)
    td["ref_log_prob"][pad] = torch.randn(int(pad.sum()), generator=gen) * 50
    td["action"][pad] = torch.randint(N_ACT, (int(pad.sum()),), generator=gen)
    return td


@pytest.mark.parametrize("aggregation", ["token_mean", "prompt_mean", "none"])
def test_padding_never_reaches_the_loss(aggregation):
    actor = Actor("categorical")
    loss = GRPOLoss(actor.module, aggregation=aggregation, kl_to_ref_coeff=0.5, kl_to_inference_coeff=0.5)
    params = list(actor.module.parameters())
    first, second = (loss(_padded_rollout(actor, 2, g)) for g in (0, 1))
    for key in first.keys():
        torch.testing.assert_close(first[key], second[key], msg=key)
        assert torch.isfinite(first[key]).all(), key
    for g, h in zip(torch.autograd.grad(total(first), params), torch.autograd.grad(total(second), params)):
        torch.testing.assert_close(g, h)


def test_token_mean_over_a_padded_rollout_equals_the_mean_over_its_valid_steps():
    actor = Actor("normal")
    td = make_batch(actor, 6, 7, seed=4)
    mask = torch.arange(7) < torch.tensor([7, 3, 1, 5, 7, 2])[:, None]
    td["collector", "mask"] = mask
    td["advantage"][~mask] = 1e6  # finite log-probs there: only the collector mask removes the padding
    loss = GRPOLoss(actor.module)
    padded, flat = loss(td), loss(td[mask])
    for key in ("loss_objective", "loss_entropy"):
        torch.testing.assert_close(padded[key], flat[key], **TOL)
    assert float(padded["loss_objective"].detach()) < 1e3


def test_defaults_api_and_output_keys():
    actor = Actor("categorical")
    loss = GRPOLoss(actor.module)
    keys = loss.tensor_keys
    assert (keys.advantage, keys.action, keys.sample_log_prob, keys.ref_log_probs) == (
        "advantage", "action", "action_log_prob", "ref_log_prob")
    assert float(loss.clip_epsilon_low) == pytest.approx(0.2) and float(loss.clip_epsilon_high) == pytest.approx(0.2)
    assert loss.clip_epsilon_low.dtype == torch.float32 and "clip_epsilon_low" in dict(loss.named_buffers())
    assert (loss.aggregation, loss.entropy_bonus, loss.samples_mc_entropy, loss.entropy_coeff, loss.reduction) == (
        "token_mean", True, 1, 0.01, "mean")
    assert (loss.kl_mask_threshold, loss.kl_to_ref_coeff, loss.kl_to_inference_coeff) == (None, None, None)
    assert loss.ref_update_interval is None and loss.functional is False
    assert loss.out_keys == ["loss_objective", "clip_fraction", "ESS", "kl_approx", "entropy", "loss_entropy",
                             "loss_kl_to_ref", "kl_to_ref", "loss_kl_to_inference", "kl_to_inference"]
    assert loss.in_keys == ["observation", "action", "action_log_prob", "advantage", "ref_log_prob"]
    assert {id(p) for p in loss.parameters()} == {id(p) for p in actor.module.parameters()}
    td = make_batch(actor, 8)
    assert set(loss(td).keys()) == {"loss_objective", "clip_fraction", "ESS", "kl_approx", "entropy", "loss_entropy"}
    # kl_to_ref_coeff=0 skips its terms, kl_to_inference_coeff=0 still reports them (spec 10.2.6).
    zero = GRPOLoss(actor.module, entropy_bonus=False, kl_to_ref_coeff=0.0, kl_to_inference_coeff=0.0)
    assert set(zero(td).keys()) == {"loss_objective", "clip_fraction", "ESS", "kl_approx", "loss_kl_to_inference",
                                    "kl_to_inference"}
    loss.set_keys(advantage="adv")
    assert loss.tensor_keys.advantage == "adv" and "adv" in loss.in_keys
    loss.set_keys(advantage=None)
    assert loss.tensor_keys.advantage == "advantage"
    loss.clip_epsilon_low = 0.05  # schedulable: copied in place
    assert float(loss.clip_epsilon_low) == pytest.approx(0.05)
    loss.select_out_keys("loss_objective", "ESS")
    assert set(loss(td).keys()) == {"loss_objective", "ESS"}


def test_input_is_not_mutated_and_errors():
    actor = Actor("categorical")
    td = make_batch(actor, 4, 3)
    before = td.clone()
    loss = GRPOLoss(actor.module, kl_to_ref_coeff=1.0)
    loss(td)
    assert set(td.keys(True, True)) == set(before.keys(True, True))
    assert (td == before).all()
    with pytest.raises(ValueError, match="Advantage key advantage not in tensordict"):
        loss(td.exclude("advantage"))
    with pytest.raises(ValueError, match="Action key action not in tensordict"):
        loss(td.exclude("action"))
    with pytest.raises(ValueError, match="advantage and log_weight must have the same number of dimensions, got "
                                         "advantage.ndim=2 and log_weight.ndim=3"):
        loss(td.set("advantage", td["advantage"].squeeze(-1)))
    with pytest.raises(ValueError, match=r"cur_log_prob and ref_log_prob must have the same shape, got log_prob."
                                         r"shape=torch.Size\(\[4, 3\]\) and ref.shape=torch.Size\(\[4, 3, 2\]\)"):
        loss(make_batch(actor, 4, 3).set("ref_log_prob", torch.zeros(4, 3, 2)))
    with pytest.raises(ValueError, match=r"Shape mismatch detected in GRPOLoss: current log-prob shape torch."
                                         r"Size\(\[4, 3\]\) != previous log-prob shape torch.Size\(\[4, 3, 2\]\)"):
        loss(make_batch(actor, 4, 3).set("action_log_prob", torch.zeros(4, 3, 2)))
    with pytest.raises(RuntimeError, match="grad"):
        loss(make_batch(actor, 4, 3).set("action_log_prob", torch.zeros(4, 3, requires_grad=True)))
    for bad in [(0.2,), (-0.1, 0.2), (1.0, 0.2), 1.5]:
        with pytest.raises(ValueError):
            GRPOLoss(actor.module, clip_epsilon=bad)
    with pytest.raises(ValueError, match="aggregation"):
        GRPOLoss(actor.module, aggregation="sequence_mean")
    with pytest.warns(UserWarning, match="advantage_key"):
        GRPOLoss(actor.module, advantage_key="adv", masking_strategy="sft")


def test_registry_builder_and_value_estimator_pairing():
    actor = Actor("categorical")
    loss = losses.build({"name": "grpo", "clip_epsilon": [0.1, 0.25], "ref_update_interval": 10}, actor.module, None)
    assert isinstance(loss, GRPOLoss) and loss.ref_update_interval == 10
    assert float(loss.clip_epsilon_high) == pytest.approx(0.25)
    with pytest.raises(ConfigError, match="clip_epsilom"):
        losses.build({"name": "grpo", "clip_epsilom": 0.1}, actor.module, None)
    with pytest.raises(ConfigError, match="no critic"):
        losses.build({"name": "grpo"}, actor.module, nn.Linear(OBS, 1))
    with pytest.raises(ValueError, match="ref_update_interval"):
        GRPOLoss(actor.module, ref_update_interval=0)
    with pytest.raises(ConfigError, match="group_relative"):
        loss.make_value_estimator(GAE(gamma=0.99, lmbda=0.95, value_network=None))
    with pytest.raises(ConfigError, match="group_size"):
        _ = loss.value_estimator
    loss.set_keys(advantage="adv")
    loss.make_value_estimator(GroupRelativeEstimator(group_size=2))
    assert loss.value_estimator.tensor_keys.advantage == "adv"
    loss.make_value_estimator("group_relative", group_size=3, mode="process")
    assert (loss.value_estimator.group_size, loss.value_estimator.mode) == (3, "process")


def test_trainer_path_group_advantages_then_loss_on_the_valid_steps():
    actor = Actor("categorical")
    td = make_batch(actor, 4, 5, seed=6)
    mask = torch.arange(5) < torch.tensor([5, 2, 3, 3])[:, None]
    td["collector", "mask"] = mask
    td["next", "reward"] = torch.ones(4, 5, 1)
    td["next", "done"] = (torch.arange(5) == torch.tensor([4, 1, 2, 2])[:, None]).unsqueeze(-1)
    loss = GRPOLoss(actor.module)
    loss.make_value_estimator("group_relative", group_size=2)
    with torch.no_grad():
        loss.value_estimator(td)  # returns (5, 2) -> +-1.5 / (sqrt(4.5) + eps); (3, 3) -> 0
    a = 3 / math.sqrt(4.5) / 2
    torch.testing.assert_close(td["advantage"][:, 0, 0], torch.tensor([a, -a, 0, 0]), **TOL)
    batch = td[mask]
    out = loss(batch)
    expected = reference(actor, batch)
    assert_matches(actor, out, expected)
