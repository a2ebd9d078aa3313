"""GRU policy block on tensordicts, with the key rules, shapes and recurrent mode of torchrl 0.14.1's ``GRUModule``.

One module serves both rollouts and training. In step mode every tensordict element is one
environment step. In recurrent mode (inside ``set_recurrent_mode(True)``, e.g. any loss forward)
the last batch dim is time, and the sequences are cut into episode segments at ``is_init``.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from tensordict import NestedKey, TensorDictBase, unravel_key, unravel_key_list
from tensordict.nn import TensorDictModuleBase
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rlexp.modules.python_gru import PARAMETER_STEMS, PythonGRU
from rlexp.modules.recurrent_mode import recurrent_mode as context_recurrent_mode
from rlexp.modules.recurrent_state_primer import HiddenStateSpec, RecurrentStatePrimer


class GRUModule(TensorDictModuleBase):
    """``nn.GRU`` reading ``in_keys = [input, hidden, "is_init"]`` and writing ``[output, next_hidden]``.

    Hidden entries are ``[*batch, L·dirs, H]``. Step mode (default): each element is one step from
    the stored hidden, zeroed where ``is_init``. Recurrent mode: time is the last batch dim; each
    segment (cut at ``is_init`` for t ≥ 1) starts from the hidden stored at its first step, and
    ``next_hidden`` is zero except at segment ends. Outputs are written into the input td.
    """

    def __init__(self, input_size: int | None = None, hidden_size: int | None = None, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = True, dropout: float = 0, bidirectional: bool = False,
                 python_based: bool = False, *, in_key: NestedKey | None = None,
                 in_keys: list[NestedKey] | None = None, out_key: NestedKey | None = None,
                 out_keys: list[NestedKey] | None = None, device: torch.device | str | None = None,
                 gru: nn.Module | None = None, default_recurrent_mode: bool | None = None):
        super().__init__()
        if not batch_first:
            raise ValueError("The input gru must have batch_first=True.")
        if gru is None:
            if input_size is None or hidden_size is None:
                raise TypeError("GRUModule needs input_size and hidden_size (or an existing gru=).")
            cls = PythonGRU if python_based else nn.GRU
            gru = cls(input_size, hidden_size, num_layers=num_layers, bias=bias, batch_first=True,
                      dropout=dropout, bidirectional=bidirectional)
        elif input_size is not None or hidden_size is not None:
            raise ValueError("An GRU instance cannot be passed along with class argument "
                             f"(input_size={input_size}, hidden_size={hidden_size}).")
        elif not gru.batch_first:
            raise ValueError("The input gru must have batch_first=True.")
        elif python_based and not isinstance(gru, PythonGRU):
            gru = _same_parameters_as(gru, PythonGRU)
        self.gru = gru.to(device) if device is not None else gru
        self.in_keys, self.out_keys = _expand_keys(in_key, in_keys, out_key, out_keys)
        self.default_recurrent_mode = default_recurrent_mode

    @property
    def recurrent_mode(self) -> bool:
        """The innermost ``set_recurrent_mode`` value, else ``bool(default_recurrent_mode)``."""
        mode = context_recurrent_mode()
        return bool(self.default_recurrent_mode) if mode is None else mode

    @recurrent_mode.setter
    def recurrent_mode(self, value: bool) -> None:
        raise RuntimeError("recurrent_mode cannot be changed in-place. Please use the set_recurrent_mode context "
                           "manager (or the default_recurrent_mode constructor argument).")

    def set_recurrent_mode(self, mode: bool | str = True) -> GRUModule:
        """Always raises ``RuntimeError``, as in torchrl 0.14.1: the mode is set by a context manager or at construction."""
        raise RuntimeError("The gru.set_recurrent_mode() API has been removed. To set the recurrent mode, use the "
                           "rlexp.modules.set_recurrent_mode context manager or the `default_recurrent_mode` "
                           "keyword argument in the constructor.")

    def make_python_based(self) -> GRUModule:
        """Swap ``self.gru`` for a :class:`PythonGRU` holding the same parameter objects; returns self."""
        if not isinstance(self.gru, PythonGRU):
            self.gru = _same_parameters_as(self.gru, PythonGRU)
        return self

    def make_cudnn_based(self) -> GRUModule:
        """Swap ``self.gru`` for an ``nn.GRU`` holding the same parameter objects; returns self."""
        if not isinstance(self.gru, nn.GRU):
            self.gru = _same_parameters_as(self.gru, nn.GRU)
        return self

    def make_tensordict_primer(self) -> RecurrentStatePrimer:
        """The zero-state primer for ``in_keys[1]``: needs ``out_keys[1] == ("next", in_keys[1])``.

        rlexp has no env transforms: the collector calls the returned primer on resets and steps.
        """
        hidden_key = self.in_keys[1]
        if self.out_keys[1] != unravel_key(("next", hidden_key)):
            raise RuntimeError(
                "make_tensordict_primer is supposed to work with in_keys/out_keys that have compatible names, ie. "
                "the out_keys should be named after ('next', <in_key>). Got "
                f"in_keys={self.in_keys} and out_keys={self.out_keys} instead."
            )
        device = next(self.gru.parameters()).device
        spec = HiddenStateSpec(torch.Size(self._state_shape), torch.float32, device)
        return RecurrentStatePrimer({hidden_key: spec}, is_init_key=self.in_keys[2])

    @property
    def _state_shape(self) -> tuple[int, int]:
        directions = 2 if self.gru.bidirectional else 1
        return self.gru.num_layers * directions, self.gru.hidden_size

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        is_init = tensordict.get(self.in_keys[2], None)
        if is_init is None:
            raise KeyError(f"GRUModule needs {self.in_keys[2]!r} in the input tensordict.")
        is_init = is_init.to(torch.bool)
        if self.recurrent_mode:
            output, hidden = self._recurrent(tensordict, is_init)
        else:
            output, hidden = self._step(tensordict, is_init)
        tensordict.set(self.out_keys[0], output.reshape(*tensordict.batch_size, -1))
        tensordict.set(self.out_keys[1], hidden.reshape(*tensordict.batch_size, *self._state_shape))
        return tensordict

    def _stored_hidden(self, tensordict: TensorDictBase, like: Tensor) -> Tensor:
        """The stored hidden flattened to ``[numel, L·dirs, H]``, zeros if absent."""
        hidden = tensordict.get(self.in_keys[1], None)
        if hidden is None:
            return like.new_zeros(tensordict.batch_size.numel(), *self._state_shape)
        return hidden.reshape(-1, *self._state_shape)

    def _step(self, tensordict: TensorDictBase, is_init: Tensor) -> tuple[Tensor, Tensor]:
        x = tensordict.get(self.in_keys[0])
        return self.step(x.reshape(-1, x.shape[-1]), self._stored_hidden(tensordict, x), is_init)

    def step(self, x: Tensor, hidden: Tensor, is_init: Tensor) -> tuple[Tensor, Tensor]:
        """One independent step per row of ``x [N, F]`` from ``hidden [N, L·dirs, H]``, zeroed where ``is_init``.

        Returns ``(output [N, H·dirs], next hidden [N, L·dirs, H])``. An ``nn.GRU`` runs as its ATen
        cell layer by layer: one step does not need its sequence machinery, which costs more than
        the step itself at rollout batch sizes.
        """
        hidden = hidden.reshape(-1, *self._state_shape).masked_fill(is_init.reshape(-1, 1, 1), 0)
        gru = self.gru
        if not isinstance(gru, nn.GRU) or gru.bidirectional:
            output, h_n = gru(x.unsqueeze(1), hidden.transpose(0, 1).contiguous())
            return output.squeeze(1), h_n.transpose(0, 1)
        layers = []
        for k in range(gru.num_layers):
            if k and gru.dropout:
                x = F.dropout(x, gru.dropout, gru.training)
            x = torch.gru_cell(x, hidden[:, k], *(getattr(gru, f"{stem}_l{k}", None) for stem in PARAMETER_STEMS))
            layers.append(x)
        return x, torch.stack(layers, 1)

    def _recurrent(self, tensordict: TensorDictBase, is_init: Tensor) -> tuple[Tensor, Tensor]:
        """All segments of all rows in one ``self.gru`` call; returns flat ``[N·T, ...]`` outputs.

        The segments are left-aligned in a zero-padded ``[segments, longest, F]`` batch. With
        gradients, a single-layer unidirectional GRU runs on it as is: the padding only follows
        each segment, whose final hidden is its last output, and the backward is several times
        faster than a packed one on the CPU. Otherwise the batch is packed, which skips the padding
        and gives every layer's final hidden.
        """
        if tensordict.batch_dims == 0:
            raise ValueError("GRUModule(recurrent_mode=True) requires the input tensordict to have at least one "
                             "batch dim (time). Got a 0-d tensordict.")
        x = tensordict.get(self.in_keys[0])
        x = x.reshape(-1, x.shape[-1])
        first, lengths, segment, position = _segments(is_init.reshape(-1, tensordict.batch_size[-1]))
        hidden0 = self._stored_hidden(tensordict, x).index_select(0, first).transpose(0, 1).contiguous()
        longest = int(lengths.max())
        slot = segment * longest + position  # each step's place in the flattened padded batch
        padded = x.new_zeros(len(first) * longest, x.shape[-1]).index_copy(0, slot, x).view(len(first), longest, -1)
        last = first + lengths - 1
        if torch.is_grad_enabled() and self.gru.num_layers == 1 and not self.gru.bidirectional:
            with _differentiable(self.gru, x):
                output = self.gru(padded, hidden0)[0].flatten(0, 1).index_select(0, slot)
            not_last = torch.ones(len(x), 1, dtype=torch.bool, device=x.device).index_fill_(0, last, False)
            return output, output.masked_fill(not_last, 0).unsqueeze(1)
        packed = pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        with _differentiable(self.gru, x):
            output, h_n = self.gru(packed, hidden0)
        output = pad_packed_sequence(output, batch_first=True)[0].flatten(0, 1).index_select(0, slot)
        return output, x.new_zeros(len(x), *self._state_shape).index_copy(0, last, h_n.transpose(0, 1))


def _differentiable(gru: nn.Module, x: Tensor) -> contextlib.AbstractContextManager:
    """cuDNN's GRU has no backward in eval mode, and a loss may train its actor in eval mode (GRPO): there,
    with gradients on CUDA, the GRU runs on PyTorch's own CUDA kernels instead (the same function)."""
    if x.is_cuda and not gru.training and torch.is_grad_enabled():
        return torch.backends.cudnn.flags(enabled=False)
    return contextlib.nullcontext()


def _segments(is_init: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Cut rows ``[N, T]`` into segments starting at t=0 and at every later ``is_init``.

    Returns the flat index of each segment's first step, each segment's length, and for each flat
    step its segment and its position in that segment.
    """
    start = is_init.clone()
    start[:, 0] = True
    start = start.flatten()
    first = start.nonzero().squeeze(-1)
    lengths = torch.diff(first, append=first.new_tensor([start.numel()]))
    segment = start.cumsum(0) - 1
    position = torch.arange(start.numel(), device=start.device) - first[segment]
    return first, lengths, segment, position


def _same_parameters_as(gru: nn.Module, cls: type[nn.Module]) -> nn.Module:
    """A ``cls`` GRU configured like ``gru`` that holds the very same parameter objects."""
    new = cls(gru.input_size, gru.hidden_size, num_layers=gru.num_layers, bias=gru.bias, batch_first=True,
              dropout=gru.dropout, bidirectional=gru.bidirectional)
    for name, param in gru.named_parameters():
        setattr(new, name, param)
    return new.train(gru.training)


def _expand_keys(in_key, in_keys, out_key, out_keys) -> tuple[list[NestedKey], list[NestedKey]]:
    """torchrl's key rules: ``[input, hidden, "is_init"]`` in, ``[output, next_hidden]`` out."""
    if (in_key is None) == (in_keys is None):
        raise ValueError("Either in_keys or in_key must be specified but not both or none. "
                         f"Got {in_keys} and {in_key} respectively.")
    if (out_key is None) == (out_keys is None):
        raise ValueError("Either out_keys or out_key must be specified but not both or none. "
                         f"Got {out_keys} and {out_key} respectively.")
    in_keys = unravel_key_list([in_key, "recurrent_state"] if in_keys is None else _key_list(in_keys))
    out_keys = unravel_key_list([out_key, ("next", "recurrent_state")] if out_keys is None else _key_list(out_keys))
    if len(in_keys) == 2:
        in_keys.append("is_init")
    if len(in_keys) != 3 or in_keys[2] != "is_init":
        raise ValueError("GRUModule expects 2 inputs: a value and a hidden state (and potentially an 'is_init' "
                         f"marker). Got in_keys {in_keys} instead.")
    if len(out_keys) != 2:
        raise ValueError(f"GRUModule expects 2 outputs: a value and a hidden state. Got out_keys {out_keys} instead.")
    return in_keys, out_keys


def _key_list(keys: NestedKey | list[NestedKey]) -> list[NestedKey]:
    """A list of keys: a bare string is one key, any other sequence is a list of keys."""
    return [keys] if isinstance(keys, str) else list(keys)
