"""Losses (PPO family, GRPO) and value estimators with torchrl 0.14's API, registered for the config groups."""

from rlexp.objectives.clip_ppo import ClipPPOLoss
from rlexp.objectives.common import LossModule, add_random_module
from rlexp.objectives.grpo import GRPOLoss, ReferencePolicy, grpo
from rlexp.objectives.klpen_ppo import KLPENPPOLoss
from rlexp.objectives.ppo import PPOLoss
from rlexp.objectives.utils import ValueEstimators, default_value_kwargs
from rlexp.registry import losses

__all__ = ["ClipPPOLoss", "GRPOLoss", "KLPENPPOLoss", "LossModule", "PPOLoss", "ReferencePolicy", "ValueEstimators", "add_random_module", "default_value_kwargs"]
