"""Vectorised reverse linear recurrence ``y_t = x_t + c_t * y_{t+1}``, the kernel of every return.

GAE, TD(1) and TD(lambda) are all this recurrence with different ``x`` and ``c``. A Hillis-Steele
scan computes it in ``ceil(log2 T)`` tensor steps instead of a Python loop over time; it uses only
products of ``c`` (no logarithms), so zeros at episode boundaries cut the recursion exactly.
"""

from __future__ import annotations

import torch


def reverse_linear_scan(x: torch.Tensor, c: torch.Tensor, init: torch.Tensor | None = None) -> torch.Tensor:
    """Return ``y`` with ``y_t = x_t + c_t y_{t+1}`` along dim -2, and ``y_T = init`` (0 if None).

    ``x`` and ``c`` have the same shape ``[*B, T, F]``; ``init`` broadcasts against ``[*B, F]``.
    """
    acc, mult = x, c
    steps = x.shape[-2]
    offset = 1
    while offset < steps:
        # acc[t] sums x over [t, t + offset); mult[t] is the product of c over the same span.
        head = acc[..., :-offset, :] + mult[..., :-offset, :] * acc[..., offset:, :]
        acc = torch.cat([head, acc[..., -offset:, :]], dim=-2)
        if init is not None or 2 * offset < steps:
            mult = torch.cat([mult[..., :-offset, :] * mult[..., offset:, :], mult[..., -offset:, :]], dim=-2)
        offset *= 2
    if init is not None:
        acc = acc + mult * init.unsqueeze(-2)
    return acc
