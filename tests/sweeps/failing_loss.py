"""Losses that fail in their second training iteration, after the job's W&B run has started and logged once.

Loaded by multirun tests through ``imports=[failing_loss]`` to crash one job deliberately.
"""

from rlexp.objectives import PPOLoss
from rlexp.registry import losses


@losses.register("failing_ppo")
class FailingPPOLoss(PPOLoss):
    """PPOLoss that raises on forward call number ``fail_at_call`` (17 = first minibatch of iteration 2
    with the default 4 epochs x 4 minibatches)."""

    def __init__(self, actor_network, critic_network, *, fail_at_call: int = 17, **kwargs):
        super().__init__(actor_network, critic_network, **kwargs)
        self.fail_at_call, self.calls = fail_at_call, 0

    def forward(self, tensordict):
        self.calls += 1
        if self.calls == self.fail_at_call:
            raise RuntimeError("failing_ppo: deliberate test failure")
        return super().forward(tensordict)


@losses.register("nan_ppo")
class NaNPPOLoss(PPOLoss):
    """PPOLoss whose objective is NaN from forward call ``nan_at_call`` on (a diverging run: exit code 3)."""

    def __init__(self, actor_network, critic_network, *, nan_at_call: int = 17, **kwargs):
        super().__init__(actor_network, critic_network, **kwargs)
        self.nan_at_call, self.calls = nan_at_call, 0

    def forward(self, tensordict):
        self.calls += 1
        out = super().forward(tensordict)
        if self.calls >= self.nan_at_call:
            out["loss_objective"] = out["loss_objective"] * float("nan")
        return out
