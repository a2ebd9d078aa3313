"""A user's own loss, registered from outside rlexp and loaded through the `imports:` config key."""

from rlexp.objectives import ClipPPOLoss
from rlexp.registry import losses


@losses.register("clip_ppo_with_l2")
class ClipPPOWithL2(ClipPPOLoss):
    """ClipPPO plus an L2 penalty on the actor's parameters, reported as its own loss term."""

    def __init__(self, actor_network, critic_network, *, l2_coeff: float = 1e-4, **kwargs):
        super().__init__(actor_network, critic_network, **kwargs)
        self.l2_coeff = l2_coeff

    def forward(self, tensordict):
        out = super().forward(tensordict)
        penalty = sum(p.pow(2).sum() for p in self.actor_network.parameters())
        return out.set("loss_l2", self.l2_coeff * penalty)


@losses.register("clip_ppo_with_a_bug")
def clip_ppo_with_a_bug(actor_network, critic_network, **kwargs):
    """A builder whose own code is wrong: the TypeError it raises is a bug, not a rejected option."""
    scale = None
    return ClipPPOLoss(actor_network, critic_network, entropy_coeff=scale * 0.01, **kwargs)
