"""A multi-layer GRU written in plain PyTorch ops, interchangeable with ``nn.GRU(batch_first=True)``.

``GRUModule(python_based=True)`` uses it: the cell is readable and differentiable op by op, and
state_dicts load either way because parameter names, shapes, gate order and initialisation match.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

PARAMETER_STEMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def gru_cell(x: Tensor, h: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """One GRU step, gates (r, z, n): ``h' = n + z * (h - n)`` with ``n = tanh(Wx + b + r * (Uh + c))``."""
    r_x, z_x, n_x = F.linear(x, w_ih, b_ih).chunk(3, -1)
    r_h, z_h, n_h = F.linear(h, w_hh, b_hh).chunk(3, -1)
    r = torch.sigmoid(r_x + r_h)
    z = torch.sigmoid(z_x + z_h)
    n = torch.tanh(n_x + r * n_h)
    return n + z * (h - n)


class PythonGRU(nn.Module):
    """``nn.GRU`` re-implemented as a loop over time and layers; accepts ``[N, T, F]`` or packed input."""

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
            for stem, shape in zip(PARAMETER_STEMS, shapes):
                self.register_parameter(f"{stem}_l{layer}", nn.Parameter(torch.empty(shape)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.GRU``'s initialisation: every parameter uniform in ``±1/sqrt(hidden_size)``."""
        bound = self.hidden_size**-0.5
        for param in self.parameters():
            nn.init.uniform_(param, -bound, bound)

    def forward(self, input: Tensor | PackedSequence, hx: Tensor | None = None):
        """``(output, h_n)`` as ``nn.GRU``: input ``[N, T, F]`` or packed; ``hx`` and ``h_n`` are ``[L, N, H]``."""
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
        """One layer over time. A step of ``n`` rows advances the first ``n`` sequences (packed order)."""
        weights = [getattr(self, f"{stem}_l{layer}", None) for stem in PARAMETER_STEMS]
        outputs = []
        for x in steps:
            active = gru_cell(x, h[: len(x)], *weights)
            h = torch.cat([active, h[len(x):]])
            outputs.append(active)
        return outputs, h
