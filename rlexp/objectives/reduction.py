"""Reduction of per-sample ``loss_*`` terms, with optional validity masks (torchrl's ``_reduce_loss``)."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

REDUCTIONS = ("none", "mean", "sum")
AUTO_MASK_KEYS = (("collector", "mask"), "shifted_valid")


def find_loss_mask(tensordict: TensorDictBase, loss_mask_key: NestedKey | None) -> torch.Tensor | None:
    """The boolean mask of valid samples: ``"auto"`` ANDs every known mask key present, ``None`` disables."""
    if loss_mask_key is None:
        return None
    keys = AUTO_MASK_KEYS if loss_mask_key == "auto" else (loss_mask_key,)
    mask = None
    for key in keys:
        found = tensordict.get(key, None)
        if found is not None:
            mask = found.bool() if mask is None else mask & found.bool()
    return mask


def broadcast_mask(mask: torch.Tensor, loss: torch.Tensor) -> torch.Tensor:
    """``mask`` shaped like ``loss``: trailing singleton dims squeezed, then right-padded and expanded."""
    while mask.ndim > loss.ndim and mask.shape[-1] == 1:
        mask = mask.squeeze(-1)
    if mask.ndim > loss.ndim:
        raise ValueError(f"Cannot broadcast a loss mask of shape {tuple(mask.shape)} to a loss of shape "
                         f"{tuple(loss.shape)}.")
    return mask.reshape(*mask.shape, *([1] * (loss.ndim - mask.ndim))).expand_as(loss)


def reduce_loss(loss: torch.Tensor, reduction: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reduce with ``"none"``/``"mean"``/``"sum"``; masked slots are selected away (NaN-safe) and
    a masked mean divides by ``max(mask.sum(), 1)``. The result is squeezed on its last dim."""
    if mask is not None:
        mask = broadcast_mask(mask, loss)
        loss = torch.where(mask, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
        if reduction == "mean":
            loss = loss.sum() / mask.sum().clamp_min(1)
        elif reduction == "sum":
            loss = loss.sum()
    elif reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss.squeeze(-1)
