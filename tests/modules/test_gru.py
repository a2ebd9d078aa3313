"""GRUModule against spec section 5: keys, modes, shapes, segment rule, seed consistency, gradients."""

import math
import threading

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule, TensorDictSequential
from torch import nn

from rlexp.modules import GRUModule, set_recurrent_mode

TOL = dict(rtol=1e-4, atol=1e-5)


def reference_step(gru: nn.Module, x: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One multi-layer GRU step written from the spec's formulas: x ``[N, F]``, h ``[N, L, H]``."""
    layers = []
    inp = x
    for k in range(gru.num_layers):
        w_ih, w_hh = getattr(gru, f"weight_ih_l{k}"), getattr(gru, f"weight_hh_l{k}")
        b_ih = getattr(gru, f"bias_ih_l{k}", None)
        b_hh = getattr(gru, f"bias_hh_l{k}", None)
        gi = inp @ w_ih.T + (0 if b_ih is None else b_ih)
        gh = h[:, k] @ w_hh.T + (0 if b_hh is None else b_hh)
        H = gru.hidden_size
        r = torch.sigmoid(gi[:, :H] + gh[:, :H])
        z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
        inp = n + z * (h[:, k] - n)
        layers.append(inp)
    return inp, torch.stack(layers, 1)


def segment_starts(is_init: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` bool: True where a recurrent-mode segment begins (t=0, or is_init at t >= 1)."""
    starts = is_init.squeeze(-1).clone()
    starts[:, 0] = True
    return starts


def make_gru(num_layers=2, python_based=False, **kw):
    torch.manual_seed(0)
    return GRUModule(input_size=3, hidden_size=5, num_layers=num_layers, python_based=python_based,
                     in_keys=["obs", "rs"], out_keys=["features", ("next", "rs")], **kw)


# ----------------------------------------------------------------------------------------------- keys


def test_in_key_out_key_expand_to_recurrent_state_and_is_init():
    module = GRUModule(3, 4, in_key="x", out_key="y")
    assert module.in_keys == ["x", "recurrent_state", "is_init"]
    assert module.out_keys == ["y", ("next", "recurrent_state")]
    assert module.gru.num_layers == 1 and isinstance(module.gru, nn.GRU) and module.gru.batch_first
    assert module.recurrent_mode is False


def test_explicit_keys_nested_and_with_is_init():
    module = GRUModule(3, 4, in_keys=[("a", "x"), "h", "is_init"], out_keys=[("a", "y"), ("next", "h")])
    assert module.in_keys == [("a", "x"), "h", "is_init"]
    assert module.out_keys == [("a", "y"), ("next", "h")]


BOTH_OR_NONE = "Either {0}s or {0} must be specified but not both or none"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(in_key="x", in_keys=["x", "h"], out_key="y"), BOTH_OR_NONE.format("in_key")),
        (dict(out_key="y"), BOTH_OR_NONE.format("in_key")),
        (dict(in_key="x", out_key="y", out_keys=["y", ("next", "h")]), BOTH_OR_NONE.format("out_key")),
        (dict(in_key="x"), BOTH_OR_NONE.format("out_key")),
        (dict(in_keys=["x"], out_key="y"), r"expects 2 inputs.*Got in_keys \['x'\] instead"),
        (dict(in_keys=["x", "h", "done"], out_key="y"), "expects 2 inputs"),
        (dict(in_keys=["x", "h", "is_init", "z"], out_key="y"), "expects 2 inputs"),
        (dict(in_key="x", out_keys=["y"]), r"expects 2 outputs.*Got out_keys \['y'\] instead"),
        (dict(in_key="x", out_keys=["y", "h", "c"]), "expects 2 outputs"),
        (dict(in_key="x", out_key="y", batch_first=False), "The input gru must have batch_first=True"),
        (dict(in_key="x", out_key="y", python_based=True, bidirectional=True), "does not support bidirectional"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GRUModule(3, 4, **kwargs)


def test_wrapped_gru_rules():
    gru = nn.GRU(3, 4, batch_first=True)
    module = GRUModule(gru=gru, in_key="x", out_key="y")
    assert module.gru is gru
    with pytest.raises(ValueError, match="An GRU instance cannot be passed along with class argument"):
        GRUModule(input_size=3, gru=gru, in_key="x", out_key="y")
    with pytest.raises(ValueError, match="An GRU instance cannot be passed along with class argument"):
        GRUModule(hidden_size=4, gru=gru, in_key="x", out_key="y")
    with pytest.raises(ValueError, match="The input gru must have batch_first=True"):
        GRUModule(gru=nn.GRU(3, 4), in_key="x", out_key="y")
    python = GRUModule(gru=gru, python_based=True, in_key="x", out_key="y")
    assert python.gru.weight_hh_l0 is gru.weight_hh_l0 and not isinstance(python.gru, nn.GRU)


def test_state_dict_uses_nn_gru_parameter_names():
    module = GRUModule(3, 4, num_layers=2, in_key="x", out_key="y", python_based=True)
    reference = nn.GRU(3, 4, num_layers=2, batch_first=True)
    assert set(module.state_dict()) == {f"gru.{k}" for k in reference.state_dict()}
    module.gru.load_state_dict(reference.state_dict())
    assert torch.equal(module.gru.weight_ih_l1, reference.weight_ih_l1)


# ---------------------------------------------------------------------------------------------- modes


def test_recurrent_mode_resolution_and_precedence():
    plain, recurrent = GRUModule(3, 4, in_key="x", out_key="y"), make_gru(default_recurrent_mode=True)
    assert (plain.recurrent_mode, recurrent.recurrent_mode) == (False, True)
    with set_recurrent_mode(True):
        assert plain.recurrent_mode is True
        with set_recurrent_mode("sequential"):
            assert (plain.recurrent_mode, recurrent.recurrent_mode) == (False, False)
        assert plain.recurrent_mode is True
    with set_recurrent_mode(False):
        assert recurrent.recurrent_mode is False
    assert (plain.recurrent_mode, recurrent.recurrent_mode) == (False, True)

    @set_recurrent_mode("recurrent")
    def inside():
        return plain.recurrent_mode

    assert inside() is True and plain.recurrent_mode is False
    with pytest.raises(RuntimeError, match="recurrent_mode cannot be changed in-place.*set_recurrent_mode context"):
        plain.recurrent_mode = True


def test_context_does_not_leak_into_other_threads():
    module, seen = make_gru(), []
    with set_recurrent_mode(True):
        thread = threading.Thread(target=lambda: seen.append(module.recurrent_mode))
        thread.start()
        thread.join()
        assert module.recurrent_mode is True
    assert seen == [False]


def test_removed_method_raises_and_points_to_the_context_manager():
    module = make_gru()
    for mode in (True, False, "recurrent"):
        with pytest.raises(RuntimeError, match="set_recurrent_mode.*context manager.*default_recurrent_mode"):
            module.set_recurrent_mode(mode)
    assert module.recurrent_mode is False and module.default_recurrent_mode is None  # left unchanged


# --------------------------------------------------------------------------------------- hand values


def tiny_gru(python_based):
    """H = F = 1, all weights zero except W_in = 1: r = z = 1/2, so h' = tanh(x)/2 + h/2."""
    module = GRUModule(1, 1, in_keys=["x", "h"], out_keys=["y", ("next", "h")], python_based=python_based)
    with torch.no_grad():
        for p in module.parameters():
            p.zero_()
        module.gru.weight_ih_l0[2, 0] = 1.0
    return module


@pytest.mark.parametrize("python_based", [False, True])
def test_hand_computed_segments_start_from_stored_hidden(python_based):
    module = tiny_gru(python_based)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    stored = torch.tensor([0.2, 9.0, 0.4, 9.0])  # read only at segment starts t=0 and t=2
    td = TensorDict(x=x[:, None], h=stored[:, None, None], is_init=torch.tensor([[True], [False], [True], [False]]),
                    batch_size=[4])
    t = [math.tanh(v) / 2 for v in x.tolist()]
    h1 = t[0] + 0.1
    h2 = t[1] + h1 / 2
    h3 = t[2] + 0.2  # is_init does not zero the stored 0.4 in recurrent mode
    h4 = t[3] + h3 / 2
    with set_recurrent_mode(True):
        out = module(td.clone())
    torch.testing.assert_close(out["y"], torch.tensor([[h1], [h2], [h3], [h4]]))
    torch.testing.assert_close(out["next", "h"], torch.tensor([0, h2, 0, h4]).reshape(4, 1, 1))

    step = module(td.clone())  # step mode: each element alone; is_init zeroes the stored hidden
    expected = [t[0], t[1] + 4.5, t[2], t[3] + 4.5]
    torch.testing.assert_close(step["y"], torch.tensor(expected)[:, None])
    torch.testing.assert_close(step["next", "h"], torch.tensor(expected).reshape(4, 1, 1))


# ----------------------------------------------------------------------------------- shapes, step mode


def random_td(batch, layers=2, hidden=5, with_hidden=True):
    g = torch.Generator().manual_seed(1)
    td = TensorDict(obs=torch.randn(*batch, 3, generator=g), is_init=torch.rand(*batch, 1, generator=g) < 0.3,
                    batch_size=batch)
    if with_hidden:
        td["rs"] = torch.randn(*batch, layers, hidden, generator=g)
    return td


@pytest.mark.parametrize("batch", [[], [4], [2, 3], [2, 2, 3]])
def test_step_mode_treats_every_element_as_one_step(batch):
    module = make_gru()
    td = random_td(batch)
    out = module(td)
    assert out is td
    assert out["features"].shape == (*batch, 5) and out["next", "rs"].shape == (*batch, 2, 5)
    h0 = torch.where(td["is_init"].reshape(-1, 1, 1), 0.0, td["rs"].reshape(-1, 2, 5))
    y, h1 = reference_step(module.gru, td["obs"].reshape(-1, 3), h0)
    torch.testing.assert_close(out["features"].reshape(-1, 5), y, **TOL)
    torch.testing.assert_close(out["next", "rs"].reshape(-1, 2, 5), h1, **TOL)


def test_missing_hidden_means_zeros_and_missing_is_init_raises():
    module = make_gru()
    td = random_td([4], with_hidden=False)
    out = module(td.clone())
    y, _ = reference_step(module.gru, td["obs"], torch.zeros(4, 2, 5))
    torch.testing.assert_close(out["features"], y, **TOL)
    with pytest.raises(KeyError):
        module(td.exclude("is_init"))
    with set_recurrent_mode(True), pytest.raises(KeyError):
        module(td.exclude("is_init"))


def test_recurrent_mode_shapes_and_dims():
    module = make_gru()
    with set_recurrent_mode(True):
        td = random_td([2, 2, 6])
        out = module(td.clone())
        flat = module(td.reshape(4, 6).clone())
        assert out["features"].shape == (2, 2, 6, 5) and out["next", "rs"].shape == (2, 2, 6, 2, 5)
        torch.testing.assert_close(out.reshape(4, 6)["features"], flat["features"])
        torch.testing.assert_close(out.reshape(4, 6)["next", "rs"], flat["next", "rs"])
        single = module(td[0, 1].clone())  # [T] is one row
        torch.testing.assert_close(single["features"], flat[1]["features"])
        with pytest.raises(ValueError, match=r"requires the input tensordict to have at least one batch dim \(time\)"):
            module(random_td([]))


def test_bidirectional_recurrent_single_segment_matches_nn_gru():
    torch.manual_seed(0)
    module = GRUModule(3, 4, num_layers=2, bidirectional=True, in_key="obs", out_key="y")
    td = TensorDict(obs=torch.randn(2, 5, 3), is_init=torch.zeros(2, 5, 1, dtype=torch.bool), batch_size=[2, 5])
    with set_recurrent_mode(True):
        out = module(td)
    y, h_n = module.gru(td["obs"])
    assert out["y"].shape == (2, 5, 8) and out["next", "recurrent_state"].shape == (2, 5, 4, 4)
    torch.testing.assert_close(out["y"], y)
    torch.testing.assert_close(out["next", "recurrent_state"][:, -1], h_n.transpose(0, 1))
    assert not out["next", "recurrent_state"][:, :-1].any()


# ------------------------------------------------------------------ seed consistency over a rollout


def collect(policy, primer, obs, is_init, h_start):
    """The collector's loop in step mode: prime, act, carry ("next", rs) to the next root; ``[B, T]``."""
    root = TensorDict(obs=obs[:, 0], is_init=is_init[:, 0], rs=h_start.clone(), batch_size=obs.shape[:1])
    primer.reset(root)
    steps = []
    for t in range(obs.shape[1]):
        root = policy(root)
        steps.append(root)
        if t + 1 < obs.shape[1]:
            root = primer.carry(root, TensorDict(obs=obs[:, t + 1], is_init=is_init[:, t + 1], batch_size=[len(obs)]))
    return torch.stack(steps, -1), root


@pytest.mark.parametrize("python_based", [False, True])
def test_recurrent_mode_replays_a_step_by_step_rollout_with_episode_boundaries(python_based):
    module = make_gru(python_based=python_based)
    head = TensorDictModule(nn.Linear(5, 2), in_keys=["features"], out_keys=["action"])
    policy = TensorDictSequential(module, head)
    B, T = 3, 10
    g = torch.Generator().manual_seed(2)
    obs = torch.randn(B, T, 3, generator=g)
    is_init = torch.zeros(B, T, 1, dtype=torch.bool)
    is_init[0, 0] = True  # env 0 starts fresh; envs 1, 2 continue an episode from a carried state
    is_init[1, [3, 4, 9], 0] = True  # consecutive resets and a reset on the last step
    is_init[2, 6, 0] = True
    h_start = torch.randn(B, 2, 5, generator=g)
    with torch.no_grad():
        rollout, _ = collect(policy, module.make_tensordict_primer(), obs, is_init, h_start)
    assert not rollout["rs"][is_init.squeeze(-1)].any()  # primed: zeros at every episode start
    torch.testing.assert_close(rollout["rs"][1:, 0], h_start[1:])

    replay = rollout.exclude("features", "action", ("next", "rs"))
    with set_recurrent_mode(True), torch.no_grad():
        replay = policy(replay)
    torch.testing.assert_close(replay["features"], rollout["features"], **TOL)
    torch.testing.assert_close(replay["action"], rollout["action"], **TOL)
    ends = torch.cat([segment_starts(is_init)[:, 1:], torch.ones(B, 1, dtype=torch.bool)], 1)
    torch.testing.assert_close(replay["next", "rs"][ends], rollout["next", "rs"][ends], **TOL)
    assert not replay["next", "rs"][~ends].any()
    # The seed's check: the last step's next hidden equals the step loop's final hidden.
    torch.testing.assert_close(replay["next", "rs"][:, -1], rollout["next", "rs"][:, -1], **TOL)


def test_recurrent_mode_equals_reference_loop_over_segments():
    """Independent of step mode: a per-row loop of the formula cell, restarting at each segment."""
    module = make_gru(num_layers=3)
    with set_recurrent_mode(True):
        td = random_td([3, 7], layers=3)
        out = module(td.clone())
    starts = segment_starts(td["is_init"])
    for b in range(3):
        h = None
        for t in range(7):
            if starts[b, t]:
                h = td["rs"][b, t][None]
            y, h = reference_step(module.gru, td["obs"][b, t][None], h)
            torch.testing.assert_close(out["features"][b, t], y[0], **TOL)
        torch.testing.assert_close(out["next", "rs"][b, -1], h[0], **TOL)


# ------------------------------------------------------------------------------------------ gradients


@pytest.mark.parametrize("python_based", [False, True])
def test_gradients_flow_through_segments_and_stop_at_resets(python_based):
    module = make_gru(python_based=python_based)
    B, T = 2, 6
    obs = torch.randn(B, T, 3, requires_grad=True)
    rs = torch.randn(B, T, 2, 5, requires_grad=True)
    is_init = torch.zeros(B, T, 1, dtype=torch.bool)
    is_init[0, 3] = True
    td = TensorDict(obs=obs, rs=rs, is_init=is_init, batch_size=[B, T])
    with set_recurrent_mode(True):
        y = module(td)["features"]

    def grads(output):
        return torch.autograd.grad(output.sum(), (obs, rs), retain_graph=True)

    d_obs, d_rs = grads(y[1, -1])  # row 1 has no reset: the whole sequence and h at t=0 matter
    assert (d_obs[1].abs().sum(-1) > 0).all() and d_rs[1, 0].abs().sum() > 0
    assert not d_obs[0].any() and not d_rs[0].any() and not d_rs[1, 1:].any()
    d_obs, d_rs = grads(y[0, -1])  # row 0 resets at t=3: gradient stops there
    assert not d_obs[0, :3].any() and (d_obs[0, 3:].abs().sum(-1) > 0).all()
    assert d_rs[0, 3].abs().sum() > 0 and not d_rs[0, :3].any() and not d_rs[0, 4:].any()
    d_obs, _ = grads(y[0, 2])
    assert (d_obs[0, :3].abs().sum(-1) > 0).all() and not d_obs[0, 3:].any()


@pytest.mark.parametrize("python_based", [False, True])
def test_single_layer_recurrent_pass_is_the_same_with_and_without_gradients(python_based):
    """One layer with gradients runs on the padded segments, otherwise on packed ones: same numbers."""
    module = make_gru(num_layers=1, python_based=python_based)
    td = random_td([3, 7], layers=1)
    with set_recurrent_mode(True):
        with_grad = module(td.clone())
        with torch.no_grad():
            without = module(td.clone())
    torch.testing.assert_close(with_grad["features"], without["features"], **TOL)
    torch.testing.assert_close(with_grad["next", "rs"], without["next", "rs"], **TOL)
    starts = segment_starts(td["is_init"])
    for b in range(3):  # and both are the formula cell restarted at each segment
        h = None
        for t in range(7):
            if starts[b, t]:
                h = td["rs"][b, t][None]
            y, h = reference_step(module.gru, td["obs"][b, t][None], h)
            torch.testing.assert_close(with_grad["features"][b, t], y[0], **TOL)
    ends = torch.cat([starts[:, 1:], torch.ones(3, 1, dtype=torch.bool)], 1)
    assert not with_grad["next", "rs"][~ends].any() and with_grad["next", "rs"][ends].abs().sum(-1).all()


def test_single_layer_gradients_stop_at_resets():
    module = make_gru(num_layers=1)
    obs = torch.randn(1, 6, 3, requires_grad=True)
    rs = torch.randn(1, 6, 1, 5, requires_grad=True)
    is_init = torch.zeros(1, 6, 1, dtype=torch.bool)
    is_init[0, 3] = True
    with set_recurrent_mode(True):
        y = module(TensorDict(obs=obs, rs=rs, is_init=is_init, batch_size=[1, 6]))["features"]
    d_obs, d_rs = torch.autograd.grad(y[0, -1].sum(), (obs, rs))
    assert not d_obs[0, :3].any() and (d_obs[0, 3:].abs().sum(-1) > 0).all()
    assert d_rs[0, 3].abs().sum() > 0 and not d_rs[0, :3].any() and not d_rs[0, 4:].any()
