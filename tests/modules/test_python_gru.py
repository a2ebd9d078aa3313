"""The Python GRU equals ``nn.GRU`` (values and gradients), and GRUModule swaps between them in place."""

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rlexp.modules import GRUModule, set_recurrent_mode
from rlexp.modules.python_gru import PythonGRU

TOL = dict(rtol=1e-4, atol=1e-5)


def twin(num_layers, bias=True, dropout=0.0):
    """An ``nn.GRU`` and a ``PythonGRU`` holding equal (separate) parameters."""
    torch.manual_seed(0)
    aten = nn.GRU(3, 4, num_layers=num_layers, bias=bias, batch_first=True, dropout=dropout)
    python = PythonGRU(3, 4, num_layers=num_layers, bias=bias, dropout=dropout)
    python.load_state_dict(aten.state_dict())
    return aten, python


def param_grads(module, loss):
    return torch.autograd.grad(loss, list(module.parameters()), retain_graph=True)


@pytest.mark.parametrize("num_layers,bias", [(1, True), (3, True), (2, False)])
def test_values_and_gradients_match_nn_gru(num_layers, bias):
    aten, python = twin(num_layers, bias)
    x = torch.randn(5, 7, 3, requires_grad=True)
    h0 = torch.randn(num_layers, 5, 4, requires_grad=True)
    (y_a, h_a), (y_p, h_p) = aten(x, h0), python(x, h0)
    torch.testing.assert_close(y_p, y_a, **TOL)
    torch.testing.assert_close(h_p, h_a, **TOL)
    weights = torch.randn_like(y_a)
    loss_a, loss_p = (y_a * weights).sum() + h_a.sum(), (y_p * weights).sum() + h_p.sum()
    for g_p, g_a in zip(param_grads(python, loss_p), param_grads(aten, loss_a)):
        torch.testing.assert_close(g_p, g_a, **TOL)
    for g_p, g_a in zip(torch.autograd.grad(loss_p, (x, h0)), torch.autograd.grad(loss_a, (x, h0))):
        torch.testing.assert_close(g_p, g_a, **TOL)


def test_packed_sequences_match_nn_gru():
    aten, python = twin(2)
    x, h0 = torch.randn(4, 6, 3), torch.randn(2, 4, 4)
    lengths = torch.tensor([2, 6, 1, 4])
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    (y_a, h_a), (y_p, h_p) = aten(packed, h0), python(packed, h0)
    torch.testing.assert_close(pad_packed_sequence(y_p, True)[0], pad_packed_sequence(y_a, True)[0], **TOL)
    torch.testing.assert_close(h_p, h_a, **TOL)
    # Each sequence's final hidden is the plain GRU's hidden at its own last step.
    for i, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(h_p[:, i], python(x[i:i + 1, :n], h0[:, i:i + 1])[1][:, 0], **TOL)


def test_dropout_between_layers_in_training_only():
    aten, python = twin(2, dropout=1.0)  # p = 1 drops the whole input of layer 2: deterministic
    x, h0 = torch.randn(2, 3, 3), torch.randn(2, 2, 4)
    torch.testing.assert_close(python(x, h0)[0], aten(x, h0)[0], **TOL)
    layer2 = nn.GRU(4, 4, batch_first=True)  # layer 2 alone, fed zeros
    layer2.load_state_dict({k[:-1] + "0": v for k, v in aten.state_dict().items() if k.endswith("_l1")})
    expected = layer2(torch.zeros(2, 3, 4), h0[1:])[0]
    torch.testing.assert_close(python(x, h0)[0], expected, **TOL)
    python.eval(), aten.eval()
    torch.testing.assert_close(python(x, h0)[0], aten(x, h0)[0], **TOL)
    assert not torch.allclose(python(x, h0)[0], expected)


def test_python_gru_rejects_bidirectional_and_time_major():
    with pytest.raises(ValueError):
        PythonGRU(3, 4, bidirectional=True)
    with pytest.raises(ValueError):
        PythonGRU(3, 4, batch_first=False)


def test_init_matches_nn_gru_bounds():
    python = PythonGRU(3, 16, num_layers=2)
    params = torch.cat([p.flatten() for p in python.parameters()])
    assert params.abs().max() <= 16**-0.5 and params.std() > 0.5 * 16**-0.5 / 3**0.5


def test_make_python_and_cudnn_based_keep_parameters_and_outputs():
    torch.manual_seed(0)
    module = GRUModule(3, 4, num_layers=2, in_key="obs", out_key="y")
    params = list(module.parameters())
    is_init = torch.zeros(2, 5, 1, dtype=torch.bool)
    is_init[0, 2] = True
    td = TensorDict(obs=torch.randn(2, 5, 3), recurrent_state=torch.randn(2, 5, 2, 4), is_init=is_init,
                    batch_size=[2, 5])
    results = {}
    for name, switch in [("aten", module.make_cudnn_based), ("python", module.make_python_based),
                         ("back", module.make_cudnn_based)]:
        assert switch() is module
        assert [p is q for p, q in zip(module.parameters(), params)] == [True] * len(params)
        with set_recurrent_mode(True):
            recurrent = module(td.clone())
        step = module(td.clone())
        loss = recurrent["y"].square().sum() + step["y"].sum()
        results[name] = [recurrent["y"], recurrent["next", "recurrent_state"], step["y"],
                         *torch.autograd.grad(loss, params)]
    assert isinstance(module.gru, nn.GRU)
    for name in ("python", "back"):
        for got, expected in zip(results[name], results["aten"]):
            torch.testing.assert_close(got, expected, **TOL)
