"""GRU policy block on tensordicts, with torchrl 0.14.1 ``GRUModule`` semantics.

One module serves both rollouts and training. In step mode every tensordict element is one
environment step. In recurrent mode (inside ``set_recurrent_mode(True)``, e.g. any loss forward)
the last batch dim is time, and the sequences are cut into episode segments at ``is_init``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tensordict import NestedKey, TensorDictBase, unravel_key, unravel_key_list
from tensordict.nn import TensorDictModuleBase
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from rlexp.modules.recurrent_mode import recurrent_mode as active_recurrent_mode

_PARAMETER_STEMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


class PythonGRU(nn.Module):
    """Multi-layer GRU written as a Python loop over time, a drop-in for ``nn.GRU(batch_first=True)``.

    Parameter names, gate order (r, z, n), initialisation and cell maths are those of ``nn.GRU``, so
    state_dicts load either way. Accepts batch-first tensors and packed sequences.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = True, dropout: float = 0.0, bidirectional: bool = False):
        super().__init__()
        if bidirectional:
            raise ValueError("The Python-based GRU does not support bidirectional=True.")
        if not batch_first:
            raise ValueError("The Python-based GRU only supports batch_first=True.")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.dropout = bias, float(dropout)
        self.batch_first, self.bidirectional = True, False
        for layer in range(num_layers):
            in_features = input_size if layer == 0 else hidden_size
            shapes = [(3 * hidden_size, in_features), (3 * hidden_size, hidden_size)]
            shapes += [(3 * hidden_size,)] * (2 if bias else 0)
            for stem, shape in zip(_PARAMETER_STEMS, shapes):
                self.register_parameter(f"{stem}_l{layer}", nn.Parameter(torch.empty(shape)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = self.hidden_size**-0.5
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)

    def forward(self, input: Tensor | PackedSequence, hx: Tensor | None = None):
        """``(output, h_n)`` as ``nn.GRU``: input ``[N, T, F]`` or packed, ``hx``/``h_n`` ``[L, N, H]``."""
        packed = isinstance(input, PackedSequence)
        steps = list(input.data.split(input.batch_sizes.tolist())) if packed else list(input.unbind(1))
        if hx is None:
            hx = steps[0].new_zeros(self.num_layers, len(steps[0]), self.hidden_size)
        elif packed and input.sorted_indices is not None:
            hx = hx.index_select(1, input.sorted_indices)
        finals = []
        for layer in range(self.num_layers):
            if layer:
                steps = [F.dropout(x, self.dropout, self.training) for x in steps]
            steps, h = self._run_layer(layer, steps, hx[layer])
            finals.append(h)
        h_n = torch.stack(finals)
        if not packed:
            return torch.stack(steps, 1), h_n
        if input.unsorted_indices is not None:
            h_n = h_n.index_select(1, input.unsorted_indices)
        output = PackedSequence(torch.cat(steps), input.batch_sizes, input.sorted_indices, input.unsorted_indices)
        return output, h_n

    def _run_layer(self, layer: int, steps: list[Tensor], h: Tensor) -> tuple[list[Tensor], Tensor]:
        """Run one layer; a step of ``n`` rows advances only the first ``n`` sequences (packed order)."""
        weights = [getattr(self, f"{stem}_l{layer}", None) for stem in _PARAMETER_STEMS]
        outputs = []
        for x in steps:
            active = _gru_cell(x, h[: len(x)], *weights)
            h = torch.cat([active, h[len(x):]])
            outputs.append(active)
        return outputs, h


def _gru_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    r_x, z_x, n_x = F.linear(x, w_ih, b_ih).chunk(3, -1)
    r_h, z_h, n_h = F.linear(h, w_hh, b_hh).chunk(3, -1)
    r = torch.sigmoid(r_x + r_h)
    z = torch.sigmoid(z_x + z_h)
    n = torch.tanh(n_x + r * n_h)
    return n + z * (h - n)


def _rebuild(gru: nn.Module, cls: type[nn.Module]) -> nn.Module:
    """A ``cls`` GRU with the configuration of ``gru`` that shares its parameter objects."""
    new = cls(gru.input_size, gru.hidden_size, num_layers=gru.num_layers, bias=gru.bias, batch_first=True,
              dropout=gru.dropout, bidirectional=gru.bidirectional)
    for name, param in gru.named_parameters():
        setattr(new, name, param)
    return new.train(gru.training)


@dataclass(frozen=True)
class HiddenStateSpec:
    """Per-environment shape, dtype and device of one recurrent-state entry."""

    shape: torch.Size
    dtype: torch.dtype = torch.float32
    device: torch.device | None = None

    def zero(self, batch_shape: tuple[int, ...] = ()) -> Tensor:
        return torch.zeros(*batch_shape, *self.shape, dtype=self.dtype, device=self.device)


class RecurrentStatePrimer:
    """Fills recurrent states with zeros on environment reset (the role of torchrl's ``TensorDictPrimer``).

    ``primers`` maps each state key to its :class:`HiddenStateSpec`. The trainer calls
    ``reset(td, mask)`` on the tensordict returned by the environment reset: where ``mask``
    (``[*env_batch]`` or ``[*env_batch, 1]``, True = being reset; None = all) is set, the entry becomes
    zeros of shape ``[*env_batch, *spec.shape]``; other environments keep their state.
    """

    def __init__(self, primers: dict[NestedKey, HiddenStateSpec]):
        self.primers = primers

    def reset(self, tensordict: TensorDictBase, mask: Tensor | None = None) -> TensorDictBase:
        for key, spec in self.primers.items():
            state = spec.zero(tensordict.batch_size)
            current = tensordict.get(key, None)
            if mask is not None and current is not None:
                state = torch.where(mask.reshape(*tensordict.batch_size, *[1] * len(spec.shape)), state, current)
            tensordict.set(key, state)
        return tensordict


def _key_list(keys: NestedKey | list[NestedKey]) -> list[NestedKey]:
    return [keys] if isinstance(keys, (str, tuple)) else list(keys)


def _expand_keys(in_key, in_keys, out_key, out_keys) -> tuple[list[NestedKey], list[NestedKey]]:
    """torchrl's key rules: ``[input, hidden, "is_init"]`` in, ``[output, next_hidden]`` out."""
    if (in_key is None) == (in_keys is None):
        raise ValueError("Pass exactly one of in_key and in_keys.")
    if (out_key is None) == (out_keys is None):
        raise ValueError("Pass exactly one of out_key and out_keys.")
    in_keys = unravel_key_list([in_key, "recurrent_state"] if in_keys is None else _key_list(in_keys))
    out_keys = unravel_key_list([out_key, ("next", "recurrent_state")] if out_keys is None else _key_list(out_keys))
    if len(in_keys) == 2:
        in_keys.append("is_init")
    if len(in_keys) != 3 or in_keys[2] != "is_init":
        raise ValueError(f"in_keys must be [input, hidden] or [input, hidden, 'is_init'], got {in_keys}.")
    if len(out_keys) != 2:
        raise ValueError(f"out_keys must be [output, next_hidden], got {out_keys}.")
    return in_keys, out_keys


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


class GRUModule(TensorDictModuleBase):
    """``nn.GRU`` reading ``in_keys = [input, hidden, "is_init"]`` and writing ``[output, next_hidden]``.

    Step mode (default): each element is one step; the hidden is reset to zero where ``is_init``.
    Recurrent mode (``set_recurrent_mode(True)`` or ``default_recurrent_mode=True``): time is the last
    batch dim; each segment (cut at ``is_init`` for t ≥ 1) starts from the hidden stored at its first
    step, and ``next_hidden`` is zero except at segment ends. Outputs are written into the input td.
    """

    def __init__(self, input_size: int | None = None, hidden_size: int | None = None, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = True, dropout: float = 0, bidirectional: bool = False,
                 python_based: bool = False, *, in_key: NestedKey | None = None,
                 in_keys: list[NestedKey] | None = None, out_key: NestedKey | None = None,
                 out_keys: list[NestedKey] | None = None, device: torch.device | str | None = None,
                 gru: nn.Module | None = None, default_recurrent_mode: bool | None = None):
        super().__init__()
        if not batch_first:
            raise ValueError("GRUModule requires batch_first=True.")
        if gru is None:
            cls = PythonGRU if python_based else nn.GRU
            gru = cls(input_size, hidden_size, num_layers=num_layers, bias=bias, batch_first=True,
                      dropout=dropout, bidirectional=bidirectional)
        elif input_size is not None or hidden_size is not None:
            raise ValueError("gru= cannot be combined with input_size or hidden_size.")
        elif not gru.batch_first:
            raise ValueError("The wrapped GRU must have batch_first=True.")
        elif python_based:
            gru = _rebuild(gru, PythonGRU)
        self.gru = gru.to(device) if device is not None else gru
        self.in_keys, self.out_keys = _expand_keys(in_key, in_keys, out_key, out_keys)
        self.default_recurrent_mode = default_recurrent_mode

    @property
    def recurrent_mode(self) -> bool:
        """The innermost ``set_recurrent_mode`` value, else ``bool(default_recurrent_mode)``."""
        mode = active_recurrent_mode()
        return bool(self.default_recurrent_mode) if mode is None else mode

    @recurrent_mode.setter
    def recurrent_mode(self, value: bool) -> None:
        raise RuntimeError("recurrent_mode is read-only: use set_recurrent_mode(...) or default_recurrent_mode.")

    def set_recurrent_mode(self, mode: bool = True):
        """Removed in torchrl: raises ``RuntimeError``."""
        raise RuntimeError(
            "GRUModule.set_recurrent_mode() was removed: use the rlexp.modules.recurrent_mode.set_recurrent_mode "
            "context manager/decorator or default_recurrent_mode."
        )

    def make_python_based(self) -> GRUModule:
        """Swap ``self.gru`` for a :class:`PythonGRU` sharing the same parameters; returns self."""
        if not isinstance(self.gru, PythonGRU):
            self.gru = _rebuild(self.gru, PythonGRU)
        return self

    def make_cudnn_based(self) -> GRUModule:
        """Swap ``self.gru`` for an ``nn.GRU`` sharing the same parameters; returns self."""
        if not isinstance(self.gru, nn.GRU):
            self.gru = _rebuild(self.gru, nn.GRU)
        return self

    def make_tensordict_primer(self) -> RecurrentStatePrimer:
        """A primer that gives every environment a zero hidden state ``[L·dirs, H]`` on reset."""
        hidden_key = self.in_keys[1]
        if self.out_keys[1] != unravel_key(("next", hidden_key)):
            raise RuntimeError(
                f"make_tensordict_primer needs out_keys[1] == ('next', {hidden_key!r}), got {self.out_keys[1]!r}."
            )
        device = next(self.gru.parameters()).device
        return RecurrentStatePrimer({hidden_key: HiddenStateSpec(torch.Size(self._state_shape), torch.float32, device)})

    @property
    def _state_shape(self) -> tuple[int, int]:
        directions = 2 if self.gru.bidirectional else 1
        return self.gru.num_layers * directions, self.gru.hidden_size

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        is_init = tensordict[self.in_keys[2]]
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
        """Every element is an independent single step, from zeros where ``is_init``."""
        x = tensordict[self.in_keys[0]]
        hidden = self._stored_hidden(tensordict, x)
        hidden = torch.where(is_init.reshape(-1, 1, 1), 0, hidden)
        output, h_n = self.gru(x.reshape(len(hidden), 1, -1), hidden.transpose(0, 1).contiguous())
        return output, h_n.transpose(0, 1)

    def _recurrent(self, tensordict: TensorDictBase, is_init: Tensor) -> tuple[Tensor, Tensor]:
        """All segments of all rows in one packed ``self.gru`` call; returns flat ``[N·T, ...]`` outputs."""
        if tensordict.batch_dims == 0:
            raise ValueError("Recurrent mode needs a tensordict with a time dimension (at least 1 batch dim).")
        x = tensordict[self.in_keys[0]]
        x = x.reshape(-1, x.shape[-1])
        first, lengths, segment, position = _segments(is_init.reshape(-1, tensordict.batch_size[-1]))
        hidden0 = self._stored_hidden(tensordict, x)[first].transpose(0, 1).contiguous()
        padded = x.new_zeros(len(first), int(lengths.max()), x.shape[-1]).index_put((segment, position), x)
        packed = pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        output, h_n = self.gru(packed, hidden0)
        output = pad_packed_sequence(output, batch_first=True)[0][segment, position]
        last = first + lengths - 1
        hidden = x.new_zeros(len(x), *self._state_shape).index_copy(0, last, h_n.transpose(0, 1))
        return output, hidden
