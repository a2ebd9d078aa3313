"""Group-relative advantages (GRPO): each trajectory is compared with the others from its start state.

No critic: the baseline is the mean over a group of G trajectories that started from the same
initial state, and the scale is their standard deviation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.utils import NestedKey

from rlexp.objectives.value.base import EstimatorKeys
from rlexp.objectives.value.scan import reverse_linear_scan
from rlexp.registry import ConfigError, value_estimators

MODES = ("outcome", "process")
STDS = ("unbiased", "biased")
# Values this close (relative to the largest magnitude) count as equal: the same return summed in
# another order differs by float rounding, which must not become a +-eps-scaled advantage.
EQUAL_RTOL = 1e-5


def _group_standardize(values: torch.Tensor, members: torch.Tensor, eps: float, unbiased: bool):
    """``(v - mean) / (std + eps)`` over dim 1 among ``members``; 0 where the members' values are all equal.

    All equal: ``max - min <= EQUAL_RTOL * max|v|`` (a single member counts). Returns
    ``(standardised, std, all_equal)``; ``std`` and ``all_equal`` keep dim 1 as size 1. Non-members get 0.
    """
    count = members.sum(1, keepdim=True)
    zero = values.new_zeros(())
    mean = torch.where(members, values, zero).sum(1, keepdim=True) / count.clamp_min(1)
    squares = torch.where(members, (values - mean) ** 2, zero).sum(1, keepdim=True)
    std = (squares / (count - int(unbiased)).clamp_min(1)).sqrt()
    inf = torch.full((), torch.inf, dtype=values.dtype, device=values.device)
    highest = torch.where(members, values, -inf).amax(1, keepdim=True)
    lowest = torch.where(members, values, inf).amin(1, keepdim=True)
    magnitude = torch.where(members, values.abs(), zero).amax(1, keepdim=True)
    all_equal = highest - lowest <= EQUAL_RTOL * magnitude
    standardized = torch.where(members & ~all_equal, (values - mean) / (std + eps), zero)
    return standardized, std, all_equal


@value_estimators.register("group_relative")
class GroupRelativeEstimator(EstimatorKeys, TensorDictModuleBase):
    """Writes ``advantage`` ``[N, T, 1]`` into a grouped rollout ``[N, T]`` (time last).

    Layout: rows ``g*G .. g*G+G-1`` (``G = group_size``) started from the same initial state; each
    row holds one episode, and the steps after its end are padding. Valid steps are those of the
    mask key (default ``("collector", "mask")``); without it, the steps up to and including the
    first ``done``. The return is ``R_i = sum_t gamma^t r_{i,t}`` over valid steps (``gamma=1``:
    undiscounted, the default).

    * ``mode="outcome"``: ``A_i = (R_i - mean_g R) / (std_g R + eps)`` on every valid step of row i.
    * ``mode="process"``: the reward-to-go ``G_{i,t} = sum_{k>=t} gamma^(k-t) r_{i,k}`` standardised
      the same way, per step t, among the group's rows still running at t. (Standardising single
      rewards first, as DeepSeekMath does, gives 0 for constant per-step rewards like CartPole's.)

    ``std="unbiased"`` (Bessel, as torchrl's MCAdvantage) or ``"biased"``; ``eps`` is added to the
    std. A group (or step) whose values are all equal (up to float rounding,
    ``EQUAL_RTOL``), including a single running row, gets exactly 0; so does padding. There is no
    critic, so ``value_network`` must be None. ``group_statistics`` gives per-iteration diagnostics.
    """

    @dataclass
    class _AcceptedKeys:
        """Tensordict keys (change them with ``set_keys``); reward/done/truncated live under ``"next"``."""

        advantage: NestedKey = "advantage"
        reward: NestedKey = "reward"
        done: NestedKey = "done"
        truncated: NestedKey = "truncated"
        mask: NestedKey = ("collector", "mask")

    default_keys = _AcceptedKeys

    def __init__(self, *, group_size: int, mode: str = "outcome", gamma: float = 1.0, eps: float = 1e-6,
                 std: str = "unbiased", value_network: None = None):
        if value_network is not None:
            raise ConfigError("value_estimator=group_relative uses no critic, but a value network was given; "
                              "build it with value_network=None (loss=grpo has no critic).")
        if not isinstance(group_size, int) or group_size < 2:
            raise ValueError(f"group_size must be an integer >= 2 (a group of one has no baseline), got {group_size!r}.")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
        if std not in STDS:
            raise ValueError(f"std must be one of {STDS}, got {std!r}.")
        super().__init__()
        self.group_size = group_size
        self.mode = mode
        self.gamma = float(gamma)
        self.eps = float(eps)
        self.std = std
        self._tensor_keys = self._AcceptedKeys()
        self._set_in_keys()

    def _set_in_keys(self) -> None:
        keys = self._tensor_keys
        self.in_keys = [("next", keys.reward), ("next", keys.done), ("next", keys.truncated), keys.mask]
        self.out_keys = [keys.advantage]

    # rollout pieces ---------------------------------------------------------------------------------
    def _groups(self, tensordict: TensorDictBase) -> int:
        if tensordict.batch_dims != 2:
            raise ValueError(f"{type(self).__name__} needs a rollout [num_envs, T]; got batch size "
                             f"{tuple(tensordict.batch_size)}.")
        rows = tensordict.batch_size[0]
        if rows % self.group_size:
            raise ValueError(f"{rows} trajectories cannot be split into groups of group_size={self.group_size}.")
        return rows // self.group_size

    @staticmethod
    def _flag(tensordict: TensorDictBase, key: NestedKey, default: torch.Tensor) -> torch.Tensor:
        """Boolean ``[N, T]`` entry ``key``, or ``default`` when absent."""
        value = tensordict.get(key, None)
        return default if value is None else value.reshape(tensordict.batch_size).bool()

    def _valid(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
        """``(valid [N, T], done [N, T])``; checks that no valid step follows a row's first ``done``."""
        done = tensordict["next", self._tensor_keys.done].reshape(tensordict.batch_size).bool()
        after_end = (done.long().cumsum(-1) - done.long()) > 0
        valid = self._flag(tensordict, self._tensor_keys.mask, ~after_end)
        if (valid & after_end).any():
            raise ValueError("The mask marks steps after an episode's end as valid; each row of a grouped rollout "
                             "must hold one episode (mask the steps after its first done).")
        return valid, done

    def _reward_to_go(self, tensordict: TensorDictBase, valid: torch.Tensor) -> torch.Tensor:
        """``G_{i,t}`` ``[N, T]`` over valid steps (padding contributes nothing)."""
        reward = tensordict["next", self._tensor_keys.reward].reshape(*tensordict.batch_size, 1)
        reward = torch.where(valid.unsqueeze(-1), reward, reward.new_zeros(()))
        discount = torch.full_like(reward, self.gamma)
        return reverse_linear_scan(reward, discount).squeeze(-1)

    def _returns(self, tensordict: TensorDictBase):
        """``(R [M, G], valid [N, T], reward-to-go [N, T], done [N, T])`` for M groups of G rows."""
        groups = self._groups(tensordict)
        valid, done = self._valid(tensordict)
        to_go = self._reward_to_go(tensordict, valid)
        return to_go[:, 0].reshape(groups, self.group_size), valid, to_go, done

    # outputs ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """Write ``advantage`` ``[N, T, 1]`` into ``tensordict`` (in place) and return it."""
        returns, valid, to_go, _ = self._returns(tensordict)
        groups, size = returns.shape
        unbiased = self.std == "unbiased"
        if self.mode == "outcome":
            members = valid.any(-1).reshape(groups, size)
            per_row = _group_standardize(returns, members, self.eps, unbiased)[0]
            advantage = torch.where(valid, per_row.reshape(-1, 1), to_go.new_zeros(()))
        else:
            grouped = valid.reshape(groups, size, -1)
            advantage = _group_standardize(to_go.reshape(grouped.shape), grouped, self.eps, unbiased)[0]
        tensordict.set(self._tensor_keys.advantage, advantage.reshape(*tensordict.batch_size, 1))
        return tensordict

    @torch.no_grad()
    def group_statistics(self, tensordict: TensorDictBase) -> dict[str, float]:
        """Diagnostics of the trajectory returns, to log every iteration.

        ``group_return_mean``: mean return; ``group_return_std``: within-group std (same convention
        as the advantage) averaged over groups; ``equal_return_group_fraction``: share of groups
        whose returns are all equal (zero outcome advantage); ``truncated_fraction``: share of
        trajectories that ended by truncation or did not end within the rollout.
        """
        returns, valid, _, done = self._returns(tensordict)
        members = valid.any(-1).reshape(returns.shape)
        _, std, all_equal = _group_standardize(returns, members, self.eps, self.std == "unbiased")
        truncated = self._flag(tensordict, ("next", self._tensor_keys.truncated), torch.zeros_like(done))
        cut = ((truncated & valid).any(-1) | ~(done & valid).any(-1)).float()
        return {
            "group_return_mean": returns.mean().item(),
            "group_return_std": std.mean().item(),
            "equal_return_group_fraction": all_equal.float().mean().item(),
            "truncated_fraction": cut.mean().item(),
        }
