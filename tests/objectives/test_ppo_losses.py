"""PPOLoss / ClipPPOLoss / KLPENPPOLoss against hand-written references from the spec formulas (section 2)."""

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import (
    ProbabilisticTensorDictModule,
    ProbabilisticTensorDictSequential,
    TensorDictModule,
)
from torch import distributions as D
from torch import nn
from torch.nn import functional as F

from rlexp.modules.distributions import IndependentNormal, TanhNormal
from rlexp.objectives import ClipPPOLoss, KLPENPPOLoss, PPOLoss
from rlexp.registry import ConfigError, losses

TOL = {"rtol": 1e-4, "atol": 1e-5}
OBS, N_ACT, ACT_DIM = 3, 4, 2
DIST_KINDS = ["categorical", "normal", "tanh_normal"]


class Policy:
    """Actor/critic pair plus an independent way to build the action distribution from the nets."""

    def __init__(self, kind: str, shared: bool = False, seed: int = 0):
        torch.manual_seed(seed)
        self.kind = kind
        trunk = nn.Linear(OBS, 8)
        self.trunk = trunk
        if kind == "categorical":
            head = nn.Sequential(trunk, nn.Tanh(), nn.Linear(8, N_ACT))
            params = TensorDictModule(head, in_keys=["observation"], out_keys=["logits"])
            prob = ProbabilisticTensorDictModule(in_keys=["logits"], out_keys=["action"],
                                                 distribution_class=D.Categorical, return_log_prob=True)
        else:
            self.log_std = nn.Parameter(torch.full((ACT_DIM,), -0.5))
            head = nn.Sequential(trunk, nn.Tanh(), nn.Linear(8, ACT_DIM))
            self.loc_net = head
            params = TensorDictModule(_GaussianParams(head, self.log_std), in_keys=["observation"],
                                      out_keys=["loc", "scale"])
            cls = IndependentNormal if kind == "normal" else TanhNormal
            prob = ProbabilisticTensorDictModule(in_keys=["loc", "scale"], out_keys=["action"],
                                                 distribution_class=cls, return_log_prob=True)
        self.head = head
        self.actor = ProbabilisticTensorDictSequential(params, prob)
        value_trunk = trunk if shared else nn.Linear(OBS, 8)
        self.value_net = nn.Sequential(value_trunk, nn.Tanh(), nn.Linear(8, 1))
        self.critic = TensorDictModule(self.value_net, in_keys=["observation"], out_keys=["state_value"])

    def params_of(self, obs):
        if self.kind == "categorical":
            return {"logits": self.head(obs)}
        loc = self.head(obs)
        return {"loc": loc, "scale": self.log_std.exp().expand_as(loc)}

    def dist(self, **params):
        if self.kind == "categorical":
            return D.Categorical(logits=params["logits"])
        if self.kind == "normal":
            return D.Independent(D.Normal(params["loc"], params["scale"]), 1)
        return TanhNormal(params["loc"], params["scale"])

    def entropy(self, dist):
        if self.kind == "tanh_normal":
            x = dist.rsample((1,))
            return -dist.log_prob(x).mean(0)
        return dist.entropy()


class _GaussianParams(nn.Module):
    def __init__(self, head, log_std):
        super().__init__()
        self.head = head
        self.log_std = log_std

    def forward(self, obs):
        loc = self.head(obs)
        return loc, self.log_std.exp().expand_as(loc)


def make_batch(policy: Policy, *batch, seed=1, with_advantage=True):
    """Collected data: actions from the current policy, perturbed stored log-probs and parameters."""
    gen = torch.Generator().manual_seed(seed)
    td = TensorDict({"observation": torch.randn(*batch, OBS, generator=gen)}, list(batch))
    with torch.no_grad():
        policy.actor(td)
        noise = 0.4 * torch.randn(td["action_log_prob"].shape, generator=gen)
        td["action_log_prob"] = td["action_log_prob"] + noise
        for key in ("logits", "loc"):
            if key in td.keys():
                td[key] = td[key] + 0.3 * torch.randn(td[key].shape, generator=gen)
    td["next"] = TensorDict({
        "observation": torch.randn(*batch, OBS, generator=gen),
        "reward": torch.randn(*batch, 1, generator=gen),
        "done": torch.rand(*batch, 1, generator=gen) < 0.2,
    }, list(batch))
    td["next", "terminated"] = td["next", "done"] & (torch.rand(*batch, 1, generator=gen) < 0.5)
    if with_advantage:
        td["advantage"] = torch.randn(*batch, 1, generator=gen)
        td["value_target"] = torch.randn(*batch, 1, generator=gen)
        td["state_value"] = torch.randn(*batch, 1, generator=gen)
    return td


def reference(policy: Policy, td, loss_kind, *, eps=0.2, entropy_coeff=0.01, critic_coeff=1.0, beta=1.0,
              critic_type="smooth_l1", clip_value=None, advantage=None):
    """The loss terms per sample, unreduced, computed directly from spec section 2."""
    obs = td["observation"]
    dist = policy.dist(**policy.params_of(obs))
    lp = dist.log_prob(td["action"])
    old = td["action_log_prob"]
    log_w = (lp - old).unsqueeze(-1)
    adv = td["advantage"] if advantage is None else advantage
    out = {"kl_approx": (old - lp).mean()}
    if loss_kind == "ppo":
        out["loss_objective"] = -log_w.exp() * adv
    elif loss_kind == "clip":
        lo, hi = math.log1p(-eps), math.log1p(eps)
        clipped = log_w.clamp(lo, hi)
        out["loss_objective"] = -torch.min(log_w.exp() * adv, clipped.exp() * adv)
        out["clip_fraction"] = ((log_w < lo) | (log_w > hi)).float().mean()
        w = log_w.detach().exp().squeeze(-1)
        out["ESS"] = w.sum(0) ** 2 / (w.shape[0] * (w ** 2).sum(0))
        out["max_ratio"] = w.max()
        out["mean_ratio"] = w.mean()
    else:
        prev = policy.dist(**{k: td[k] for k in (["logits"] if policy.kind == "categorical" else ["loc", "scale"])})
        kl = D.kl_divergence(prev, dist).unsqueeze(-1)
        out["loss_objective"] = -(log_w.exp() * adv - beta * kl)
        out["kl"] = kl.detach()
    ent = policy.entropy(dist).unsqueeze(-1)
    out["entropy"] = ent.mean().detach()
    out["loss_entropy"] = -entropy_coeff * ent
    v = policy.value_net(obs)
    target = td["value_target"]
    dist_fn = {"l1": lambda a, b: (a - b).abs(), "l2": lambda a, b: (a - b) ** 2,
               "smooth_l1": lambda a, b: F.smooth_l1_loss(a, b, reduction="none")}[critic_type]
    critic = dist_fn(target, v)
    if clip_value is not None:
        old_v = td["state_value"]
        v_clipped = old_v + (v - old_v).clamp(-clip_value, clip_value)
        critic = torch.maximum(critic, dist_fn(target, v_clipped))
        out["value_clip_fraction"] = ((v - old_v).abs() > clip_value).float().mean()
    out["loss_critic"] = critic_coeff * critic
    resid, tgt = (target - v).detach(), target
    out["explained_variance"] = 1 - resid.var(0, unbiased=False) / (tgt.var(0, unbiased=False)
                                                                    + torch.finfo(torch.float32).eps)
    return out


def reduce_ref(out, reduction="mean"):
    red = {"mean": lambda x: x.mean(), "sum": lambda x: x.sum(), "none": lambda x: x.squeeze(-1)}[reduction]
    return {k: (red(v) if k.startswith("loss_") else v) for k, v in out.items()}


def grads(loss_or_params, params):
    return torch.autograd.grad(loss_or_params, params, allow_unused=True, retain_graph=True)


def assert_outputs(actual, expected):
    assert set(actual.keys()) == set(expected.keys())
    for key, value in expected.items():
        torch.testing.assert_close(actual[key], value.detach(), **TOL, msg=key)


def total(out):
    return sum(v.sum() for k, v in out.items() if k.startswith("loss_"))


LOSSES = {"ppo": PPOLoss, "clip": ClipPPOLoss, "klpen": KLPENPPOLoss}


@pytest.mark.parametrize("kind", DIST_KINDS)
@pytest.mark.parametrize("loss_kind", ["ppo", "clip", "klpen"])
def test_outputs_and_gradients_match_reference(kind, loss_kind):
    policy = Policy(kind)
    td = make_batch(policy, 16)
    loss = LOSSES[loss_kind](policy.actor, policy.critic)
    torch.manual_seed(7)
    out = loss(td)
    torch.manual_seed(7)
    expected = reduce_ref(reference(policy, td, loss_kind, beta=1.0))
    if loss_kind == "klpen":
        assert out["kl"].shape == (16, 1)  # not reduced
    assert_outputs(out, expected)
    params = list(policy.actor.parameters()) + list(policy.critic.parameters())
    torch.manual_seed(7)
    out = loss(td) if loss_kind != "klpen" else out
    if loss_kind == "klpen":
        # beta changed during the first call; the gradient of its KL term uses the updated value.
        assert float(loss.beta) != 1.0
        torch.manual_seed(7)
        expected = reduce_ref(reference(policy, td, loss_kind, beta=float(loss.beta)))
    for got, want in zip(grads(total(out), params), grads(total(expected), params)):
        torch.testing.assert_close(got, want, **TOL)


def test_batch_time_layout_clip_defaults_compute_advantage(ref):
    # No advantage in the data: forward runs GAE(gamma=0.99, lmbda=0.95) with the critic (spec 9).
    policy = Policy("categorical")
    td = make_batch(policy, 4, 6, with_advantage=False)
    before = td.clone()
    loss = ClipPPOLoss(policy.actor, policy.critic)
    out = loss(td)
    assert (td == before).all() and set(td.keys(True)) == set(before.keys(True))  # input not modified
    with torch.no_grad():
        value, next_value = policy.value_net(td["observation"]), policy.value_net(td["next", "observation"])
    adv, target = ref.gae(0.99, 0.95, value, next_value, td["next", "reward"], td["next", "done"],
                          td["next", "terminated"])
    filled = td.clone().update({"advantage": adv, "value_target": target})
    expected = reduce_ref(reference(policy, filled, "clip"))
    assert out["ESS"].shape == (6,) and out["explained_variance"].shape == (6, 1)
    assert_outputs(out, expected)
    assert type(loss.value_estimator).__name__ == "GAE" and loss.value_type.name == "GAE"
    assert float(loss.value_estimator.gamma) == pytest.approx(0.99)
    assert float(loss.value_estimator.lmbda) == pytest.approx(0.95)
    assert loss.value_estimator.differentiable is True


def test_default_hyperparameters_and_keys():
    policy = Policy("normal")
    clip = ClipPPOLoss(policy.actor, policy.critic)
    assert float(clip.clip_epsilon) == pytest.approx(0.2)
    assert float(clip.entropy_coeff) == pytest.approx(0.01) and float(clip.critic_coeff) == 1.0
    assert clip.loss_critic_type == "smooth_l1" and clip.reduction == "mean"
    assert clip.tensor_keys.sample_log_prob == "action_log_prob" and clip.tensor_keys.action == "action"
    assert clip.out_keys == ["loss_objective", "clip_fraction", "entropy", "loss_entropy", "loss_critic", "ESS",
                             "kl_approx", "max_ratio", "mean_ratio"]
    assert PPOLoss(policy.actor, None).out_keys == ["loss_objective", "entropy", "loss_entropy", "loss_critic"]
    klpen = KLPENPPOLoss(policy.actor, policy.critic, clip_value=0.5)
    assert klpen.out_keys == ["loss_objective", "kl", "entropy", "loss_entropy", "loss_critic",
                              "value_clip_fraction"]
    assert (klpen.dtarg, float(klpen.beta), klpen.increment, klpen.decrement) == (0.01, 1.0, 2, 0.5)
    assert set(klpen.in_keys) == {"observation", ("next", "observation"), "action", "action_log_prob",
                                  ("next", "reward"), ("next", "done"), ("next", "terminated"), "loc", "scale"}
    assert clip.default_value_estimator.name == "GAE"
    assert "deterministic" in str(clip.deterministic_sampling_mode).lower()


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_reductions(reduction):
    policy = Policy("categorical")
    td = make_batch(policy, 5, 3)
    out = ClipPPOLoss(policy.actor, policy.critic, reduction=reduction)(td)
    expected = reduce_ref(reference(policy, td, "clip"), reduction)
    assert_outputs(out, expected)
    if reduction == "none":
        assert out["loss_objective"].shape == (5, 3)


def test_loss_mask_selects_away_nan():
    policy = Policy("categorical")
    td = make_batch(policy, 8)
    mask = torch.tensor([1, 1, 0, 1, 0, 1, 1, 1], dtype=torch.bool)
    td["advantage"][~mask] = float("nan")
    td["collector", "mask"] = mask
    out = PPOLoss(policy.actor, policy.critic)(td)
    expected = reference(policy, td, "ppo")
    for key in ("loss_objective", "loss_entropy", "loss_critic"):
        value = expected[key].squeeze(-1)
        torch.testing.assert_close(out[key], value[mask].sum() / mask.sum(), **TOL)
    none = PPOLoss(policy.actor, policy.critic, reduction="none")(td)
    assert torch.isfinite(none["loss_objective"]).all() and (none["loss_objective"][~mask] == 0).all()
    loss = PPOLoss(policy.actor, policy.critic)
    loss.loss_mask_key = None
    assert torch.isnan(loss(td)["loss_objective"])


@pytest.mark.parametrize("critic_type", ["l1", "l2", "smooth_l1"])
def test_critic_loss_types_and_clip_value(critic_type):
    policy = Policy("categorical")
    td = make_batch(policy, 12)
    td["state_value"] = policy.value_net(td["observation"]).detach() + 0.3 * torch.randn(12, 1)
    loss = PPOLoss(policy.actor, policy.critic, loss_critic_type=critic_type, clip_value=0.1, critic_coeff=0.5)
    out = loss(td)
    expected = reduce_ref(reference(policy, td, "ppo", critic_type=critic_type, clip_value=0.1, critic_coeff=0.5))
    assert 0 < float(out["value_clip_fraction"]) < 1
    assert_outputs(out, expected)


def test_clip_value_true_uses_clip_epsilon_and_bool_rejected_elsewhere():
    policy = Policy("categorical")
    td = make_batch(policy, 12)
    td["state_value"] = policy.value_net(td["observation"]).detach() + 0.3 * torch.randn(12, 1)
    out = ClipPPOLoss(policy.actor, policy.critic, clip_value=True, clip_epsilon=0.15)(td)
    expected = reduce_ref(reference(policy, td, "clip", eps=0.15, clip_value=0.15))
    assert_outputs(out, expected)
    assert "value_clip_fraction" not in ClipPPOLoss(policy.actor, policy.critic, clip_value=False)(td).keys()
    with pytest.raises(ValueError):
        PPOLoss(policy.actor, policy.critic, clip_value=True)
    with pytest.raises(ValueError):
        KLPENPPOLoss(policy.actor, policy.critic, clip_value=False)
    with pytest.raises(ValueError):
        ClipPPOLoss(policy.actor, policy.critic, clip_epsilon=(0.1, 0.2), clip_value=True)


def test_asymmetric_clip_epsilon():
    policy = Policy("categorical")
    td = make_batch(policy, 32)
    loss = ClipPPOLoss(policy.actor, policy.critic, clip_epsilon=(0.1, 0.3))
    out = loss(td)
    lp = policy.dist(**policy.params_of(td["observation"])).log_prob(td["action"])
    log_w = (lp - td["action_log_prob"]).unsqueeze(-1)
    clipped = log_w.clamp(math.log1p(-0.1), math.log1p(0.3))
    adv = td["advantage"]
    expected = -torch.min(log_w.exp() * adv, clipped.exp() * adv).mean()
    torch.testing.assert_close(out["loss_objective"], expected, **TOL)
    assert float(loss.clip_epsilon_low) == pytest.approx(0.1) and float(loss.clip_epsilon_high) == pytest.approx(0.3)
    for bad, match in [((0.1,), r"clip_epsilon tuple must have length 2, got \(0.1,\)"),
                       ((-0.1, 0.2), r"clip_epsilon values must be non-negative, got \(-0.1, 0.2\)"),
                       ((1.0, 0.2), r"clip_epsilon low must be < 1 \(to keep 1 - eps_low > 0\), got 1.0"),
                       ((0.1, -0.2), r"clip_epsilon values must be non-negative, got \(0.1, -0.2\)")]:
        with pytest.raises(ValueError, match=match):
            ClipPPOLoss(policy.actor, policy.critic, clip_epsilon=bad)


def test_normalize_advantage_global_and_excluded_dims():
    policy = Policy("categorical")
    td = make_batch(policy, 6, 5)
    adv = td["advantage"]
    out = PPOLoss(policy.actor, policy.critic, normalize_advantage=True)(td)
    norm = (adv - adv.mean()) / adv.std()
    expected = reduce_ref(reference(policy, td, "ppo", advantage=norm))
    torch.testing.assert_close(out["loss_objective"], expected["loss_objective"], **TOL)
    out = PPOLoss(policy.actor, policy.critic, normalize_advantage=True, normalize_advantage_exclude_dims=(-2,))(td)
    per_t = (adv - adv.mean((0, 2), keepdim=True)) / adv.std((0, 2), keepdim=True)
    expected = reduce_ref(reference(policy, td, "ppo", advantage=per_t))
    torch.testing.assert_close(out["loss_objective"], expected["loss_objective"], **TOL)


def test_separate_losses_keeps_critic_gradient_out_of_shared_params():
    policy = Policy("categorical", shared=True)
    td = make_batch(policy, 10)
    trunk = list(policy.trunk.parameters())
    critic_only = [p for p in policy.critic.parameters() if all(p is not q for q in trunk)]
    for separate in (False, True):
        loss = ClipPPOLoss(policy.actor, policy.critic, separate_losses=separate)
        out = loss(td)
        expected = reference(policy, td, "clip")
        actor_terms = expected["loss_objective"].mean() + expected["loss_entropy"].mean()
        critic_term = expected["loss_critic"].mean()
        want_trunk = grads(actor_terms + (0 if separate else critic_term), trunk)
        got = grads(total(out), trunk + critic_only)
        for g, w in zip(got[: len(trunk)], want_trunk):
            torch.testing.assert_close(g, w, **TOL)
        for g, w in zip(got[len(trunk):], grads(critic_term, critic_only)):
            torch.testing.assert_close(g, w, **TOL)


def test_parameters_listed_once_including_shared():
    policy = Policy("normal", shared=True)
    for separate in (False, True):
        loss = ClipPPOLoss(policy.actor, policy.critic, separate_losses=separate)
        listed = list(loss.parameters())
        expected = {id(p) for p in [*policy.actor.parameters(), *policy.critic.parameters()]}
        assert len(listed) == len(expected) and {id(p) for p in listed} == expected


def test_optional_terms_and_critic_coeff():
    policy = Policy("categorical")
    td = make_batch(policy, 6)
    out = ClipPPOLoss(policy.actor, policy.critic, critic_coeff=0, entropy_bonus=False)(td)
    assert not {"loss_critic", "explained_variance", "entropy", "loss_entropy"} & set(out.keys())
    out = ClipPPOLoss(policy.actor, None)(td)
    assert "loss_critic" not in out.keys() and "explained_variance" not in out.keys()
    out = PPOLoss(policy.actor, policy.critic, log_explained_variance=False)(td)
    assert "explained_variance" not in out.keys() and "loss_critic" in out.keys()
    with pytest.raises(TypeError):
        PPOLoss(policy.actor, None, critic_coeff=1.0)
    with pytest.raises(RuntimeError):
        ClipPPOLoss(policy.actor, None)(td.exclude("advantage"))


def test_constructor_errors_and_aliases():
    policy = Policy("categorical")
    with pytest.raises(TypeError, match=r"Passing gamma / lambda parameters through the loss constructor is a "
                                        r"deprecated feature.*make_value_estimator\(ValueEstimators"):
        PPOLoss(policy.actor, policy.critic, gamma=0.9)
    for key in ("advantage", "value_target", "value"):
        with pytest.raises(RuntimeError, match=f"Setting '{key}' via the constructor is deprecated, use "
                                               r"\.set_keys\(<key>='some_key'\) instead"):
            PPOLoss(policy.actor, policy.critic, **{f"{key}_key": "x"})
    # The seed documents' one-f spelling is a deprecated alias (issue 3; torchrl 0.14 itself raises TypeError).
    with pytest.warns(DeprecationWarning, match="entropy_coef is deprecated; use entropy_coeff"):
        loss = ClipPPOLoss(policy.actor, policy.critic, entropy_coef=0.2, critic_coef=0.3)
    assert float(loss.entropy_coeff) == pytest.approx(0.2) and float(loss.critic_coeff) == pytest.approx(0.3)
    with pytest.raises(TypeError, match="only one of entropy_coeff and entropy_coef"):
        PPOLoss(policy.actor, policy.critic, entropy_coeff=0.1, entropy_coef=0.2)
    loss = PPOLoss(actor=policy.actor, critic=policy.critic)
    assert loss.critic_network is policy.critic
    with pytest.raises(NotImplementedError, match="l1, l2, smooth_l1"):
        PPOLoss(policy.actor, policy.critic, loss_critic_type="l3")
    with pytest.raises(NotImplementedError, match="none, mean, sum"):
        PPOLoss(policy.actor, policy.critic, reduction="avg")
    with pytest.raises(ValueError, match=r"increment should be >= 1.0 in KLPENPPOLoss, got 0.5000"):
        KLPENPPOLoss(policy.actor, policy.critic, increment=0.5)
    with pytest.raises(ValueError, match=r"decrement should be <= 1.0 in KLPENPPOLoss, got 1.5000"):
        KLPENPPOLoss(policy.actor, policy.critic, decrement=1.5)
    with pytest.raises(TypeError, match="Missing positional arguments actor_network or critic_network"):
        PPOLoss(critic_network=policy.critic)
    with pytest.raises(TypeError, match="Missing positional arguments actor_network or critic_network"):
        PPOLoss(policy.actor, critic_coeff=0.5)
    assert PPOLoss(policy.actor, critic_coeff=0.0).critic_network is None  # no critic asked for
    with pytest.raises(ValueError, match="clip_value=True cannot infer the value-clip threshold from an "
                                         "asymmetric clip_epsilon tuple.*clip_value=0.2"):
        ClipPPOLoss(policy.actor, policy.critic, clip_epsilon=(0.1, 0.3), clip_value=True)


def test_forward_input_errors():
    policy = Policy("categorical")
    td = make_batch(policy, 6)
    with pytest.raises(RuntimeError, match="Critic network is not specified, cannot compute advantage"):
        ClipPPOLoss(policy.actor)(td.exclude("advantage"))
    loss = PPOLoss(policy.actor, policy.critic)
    with pytest.raises(KeyError, match="Couldn't find the log-prob action_log_prob in the input data"):
        loss(td.exclude("action_log_prob"))
    bad = td.clone()
    bad["action_log_prob"] = bad["action_log_prob"].requires_grad_(True)
    with pytest.raises(RuntimeError, match="tensordict stored action_log_prob requires grad"):
        loss(bad)
    with pytest.raises(KeyError, match="the key value_target was not found in the input tensordict"):
        loss(td.exclude("value_target"))
    with pytest.raises(KeyError, match="clip_value is set to 0.5, but the key state_value was not found.*"
                                       "Pass the critic's values of the collected states under 'state_value'"):
        PPOLoss(policy.actor, policy.critic, clip_value=0.5)(td.exclude("state_value"))
    bad = td.clone()
    bad["advantage"] = bad["advantage"].squeeze(-1)  # [B] broadcast against [B, 1] -> [B, B]
    with pytest.raises(ValueError, match=r"The advantage \(shape=\(6,\)\) and the log-weight \(shape=\(6, 1\)\) "
                                         r"would broadcast to \(6, 6\).*advantage.unsqueeze\(-1\)"):
        loss(bad)
    with pytest.raises(KeyError):
        KLPENPPOLoss(policy.actor, policy.critic)(td.exclude("logits"))


def test_per_dimension_log_probs_broadcast_advantage():
    # A plain Normal gives one log-prob per action dim: the [B, 1] advantage is expanded to [B, D, 1].
    torch.manual_seed(0)
    net = TensorDictModule(_GaussianParams(nn.Linear(OBS, ACT_DIM), nn.Parameter(torch.zeros(ACT_DIM))),
                           in_keys=["observation"], out_keys=["loc", "scale"])
    actor = ProbabilisticTensorDictSequential(net, ProbabilisticTensorDictModule(
        in_keys=["loc", "scale"], out_keys=["action"], distribution_class=D.Normal, return_log_prob=True))
    td = TensorDict({"observation": torch.randn(7, OBS)}, [7])
    with torch.no_grad():
        actor(td)
    td["action_log_prob"] = td["action_log_prob"] + 0.1
    td["advantage"] = torch.randn(7, 1)
    out = ClipPPOLoss(actor, None, reduction="none", entropy_bonus=False)(td)
    assert out["loss_objective"].shape == (7, ACT_DIM) and out["ESS"].shape == (ACT_DIM,)
    ratio = torch.full((7, ACT_DIM, 1), math.exp(-0.1))
    expected = -torch.min(ratio * td["advantage"].unsqueeze(1), ratio * td["advantage"].unsqueeze(1))
    torch.testing.assert_close(out["loss_objective"], expected.squeeze(-1), **TOL)


def test_klpen_beta_adapts_and_resets():
    policy = Policy("categorical")
    td = make_batch(policy, 16)
    loss = KLPENPPOLoss(policy.actor, policy.critic, dtarg=1e-6, beta=0.5)
    loss(td)
    assert float(loss.beta) == pytest.approx(1.0)  # KL far above 1.5 * dtarg: beta * increment
    loss(td)
    assert float(loss.beta) == pytest.approx(2.0)
    loss.reset()
    assert float(loss.beta) == pytest.approx(0.5)
    loss = KLPENPPOLoss(policy.actor, policy.critic, dtarg=1e3, decrement=0.25)
    beta_buffer = loss.beta
    loss(td)
    assert float(loss.beta) == pytest.approx(0.25) and loss.beta is beta_buffer
    kl = reference(policy, td, "klpen")["kl"]
    loss = KLPENPPOLoss(policy.actor, policy.critic, dtarg=float(kl.mean()))  # within the band: unchanged
    loss(td)
    assert float(loss.beta) == 1.0


def test_schedulable_buffers_change_in_place():
    policy = Policy("categorical")
    td = make_batch(policy, 8)
    loss = ClipPPOLoss(policy.actor, policy.critic)
    buffer = loss.entropy_coeff
    loss.entropy_coeff = 0.5
    loss.clip_epsilon = 0.05
    assert loss.entropy_coeff is buffer and buffer.dtype == torch.float32
    assert_outputs(loss(td), reduce_ref(reference(policy, td, "clip", eps=0.05, entropy_coeff=0.5)))


def test_functional_false_gives_same_numbers():
    policy = Policy("normal", shared=True)
    td = make_batch(policy, 9)
    a = ClipPPOLoss(policy.actor, policy.critic)(td)
    loss = ClipPPOLoss(policy.actor, policy.critic, functional=False)
    assert loss.functional is False
    b = loss(td)
    assert_outputs(b, {k: v for k, v in a.items()})
    params = list(policy.actor.parameters())
    for g, w in zip(grads(total(a), params), grads(total(b), params)):
        torch.testing.assert_close(g, w)


def test_forward_runs_deterministic_and_recurrent():
    from tensordict.nn.probabilistic import interaction_type

    from rlexp.modules.recurrent_mode import recurrent_mode

    seen = []

    def value(obs):
        seen.append((interaction_type(), recurrent_mode()))
        return obs.sum(-1, keepdim=True)

    policy = Policy("categorical")
    critic = TensorDictModule(value, in_keys=["observation"], out_keys=["state_value"])
    PPOLoss(policy.actor, critic)(make_batch(policy, 4))
    assert seen and all(str(mode).lower().endswith("deterministic") and rec is True for mode, rec in seen)
    assert recurrent_mode() is None


def test_keyword_call_returns_tuple_in_out_keys_order():
    policy = Policy("categorical")
    td = make_batch(policy, 5)
    loss = PPOLoss(policy.actor, policy.critic)
    kwargs = {"observation": td["observation"], "action": td["action"], "action_log_prob": td["action_log_prob"],
              "advantage": td["advantage"], "value_target": td["value_target"],
              "next_observation": td["next", "observation"], "next_reward": td["next", "reward"],
              "next_done": td["next", "done"], "next_terminated": td["next", "terminated"]}
    loss.in_keys = loss.in_keys + ["advantage", "value_target"]
    result = loss(**kwargs)
    expected = loss(td)
    assert isinstance(result, tuple) and len(result) == 4
    for value, key in zip(result, loss.out_keys):
        torch.testing.assert_close(value, expected[key])


def test_select_out_keys_and_reset():
    policy = Policy("categorical")
    td = make_batch(policy, 5)
    loss = ClipPPOLoss(policy.actor, policy.critic)
    full = set(loss.out_keys)
    loss.select_out_keys("loss_objective", "clip_fraction")
    keys = set(loss(td).keys())
    # The other out_keys are dropped. Outputs outside out_keys (explained_variance, kl_approx) are dropped
    # as well by tensordict 0.14's hook and kept by 0.15's, which removes only the unselected out_keys.
    assert {"loss_objective", "clip_fraction"} <= keys and not keys & (full - {"loss_objective", "clip_fraction"})
    assert keys <= set(loss.out_keys) | {"explained_variance", "kl_approx"}
    loss.reset_out_keys()
    assert "ESS" in loss(td).keys()


def test_registry_builds_losses_and_rejects_unknown_options():
    policy = Policy("categorical")
    loss = losses.build({"name": "clip_ppo", "clip_epsilon": 0.1, "loss_critic_type": "l2",
                         "entropy_coeff": 0.0}, policy.actor, policy.critic)
    assert isinstance(loss, ClipPPOLoss) and float(loss.clip_epsilon) == pytest.approx(0.1)
    assert isinstance(losses.build({"name": "ppo"}, policy.actor, policy.critic), PPOLoss)
    assert isinstance(losses.build({"name": "klpen_ppo", "dtarg": 0.02}, policy.actor, policy.critic), KLPENPPOLoss)
    with pytest.raises(ConfigError, match="clip_epsilon"):
        losses.build({"name": "ppo", "clip_epsilon": 0.1}, policy.actor, policy.critic)


def test_max_importance_ratio_caps_behaviour_ratio_keeping_gradient():
    policy = Policy("categorical")
    td = make_batch(policy, 24)
    loss = ClipPPOLoss(policy.actor, policy.critic, max_importance_ratio=1.1, entropy_bonus=False, critic_coeff=0)
    out = loss(td)
    lp = policy.dist(**policy.params_of(td["observation"])).log_prob(td["action"])
    log_w = (lp - td["action_log_prob"]).unsqueeze(-1)
    delta = (math.log(1.1) - log_w.detach()).clamp_max(0)
    assert (delta < 0).any()
    clipped = log_w.clamp(math.log1p(-0.2), math.log1p(0.2))
    adv = td["advantage"]
    expected = -torch.min((log_w + delta).exp() * adv, (clipped + delta).exp() * adv).mean()
    torch.testing.assert_close(out["loss_objective"], expected, **TOL)
    torch.testing.assert_close(out["max_ratio"], (log_w + delta).exp().max().detach(), **TOL)
    params = list(policy.actor.parameters())
    for g, w in zip(grads(out["loss_objective"], params), grads(expected, params)):
        torch.testing.assert_close(g, w, **TOL)
    with pytest.raises(ValueError):
        PPOLoss(policy.actor, policy.critic, max_importance_ratio=0.0)


@pytest.mark.parametrize("loss_kind", ["clip", "klpen"])
def test_delay_actor_uses_proximal_policy(loss_kind):
    policy = Policy("categorical")
    td = make_batch(policy, 16)
    loss = LOSSES[loss_kind](policy.actor, policy.critic, delay_actor=True, entropy_bonus=False, critic_coeff=0)
    target = loss.target_actor_network_params
    with torch.no_grad():
        for value in target.values(True, True):
            value.add_(0.2 * torch.randn_like(value))
    out = loss(td)
    logits_now = policy.head(td["observation"])
    with torch.no_grad():
        prox_head = loss.get_stateful_net("actor_network")
        prox_params = TensorDict.from_module(prox_head)
        prox_params.update_(target.data)
        logits_prox = prox_head[0].module(td["observation"])
    dist, prox = D.Categorical(logits=logits_now), D.Categorical(logits=logits_prox)
    lp, lp_prox = dist.log_prob(td["action"]), prox.log_prob(td["action"])
    log_w = (lp - lp_prox).unsqueeze(-1)
    delta = (lp_prox - td["action_log_prob"]).unsqueeze(-1)
    adv = td["advantage"]
    torch.testing.assert_close(out["kl_approx"], (lp_prox - lp).mean().detach(), **TOL)
    if loss_kind == "clip":
        clipped = log_w.clamp(math.log1p(-0.2), math.log1p(0.2))
        expected = -torch.min((log_w + delta).exp() * adv, (clipped + delta).exp() * adv).mean()
        torch.testing.assert_close(out["clip_fraction"], (clipped != log_w).float().mean(), **TOL)
    else:
        expected = -((log_w + delta).exp() * adv - D.kl_divergence(prox, dist).unsqueeze(-1)).mean()
    torch.testing.assert_close(out["loss_objective"], expected, **TOL)
    with pytest.raises(ValueError):
        ClipPPOLoss(policy.actor, policy.critic, delay_actor=True, functional=False)


def test_subclass_signatures_expose_inherited_keywords():
    import inspect

    for cls in (ClipPPOLoss, KLPENPPOLoss):
        params = inspect.signature(cls).parameters
        assert {"entropy_coeff", "loss_critic_type", "reduction", "clip_value"} <= set(params)
        assert all(p.kind is not p.VAR_KEYWORD for p in params.values())
    policy = Policy("categorical")
    with pytest.raises(ConfigError, match="dtarg"):
        losses.build({"name": "clip_ppo", "dtarg": 0.1}, policy.actor, policy.critic)
    with pytest.raises(TypeError):
        ClipPPOLoss(policy.actor, policy.critic, entropy_coefficient=0.1)


def test_shifted_valid_masks_normalisation_and_reduction():
    policy = Policy("categorical")
    td = make_batch(policy, 10)
    valid = torch.tensor([1, 1, 1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    td["shifted_valid"] = valid
    out = PPOLoss(policy.actor, policy.critic, normalize_advantage=True)(td)
    adv = td["advantage"][valid]
    norm = (td["advantage"] - adv.mean()) / adv.std(unbiased=False)
    per_sample = reference(policy, td, "ppo", advantage=norm)["loss_objective"].squeeze(-1)
    torch.testing.assert_close(out["loss_objective"], per_sample[valid].mean(), **TOL)
