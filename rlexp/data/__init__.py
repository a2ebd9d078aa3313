"""Replay data: buffer, storage, samplers, the multi-step transform, and the ``replay_transform`` registry entries."""

from rlexp.data.multistep import MultiStepTransform, n_step_rollout
from rlexp.data.replay_buffer import ReplayBuffer
from rlexp.data.samplers import RandomSampler, SamplerWithoutReplacement, SliceSampler
from rlexp.data.storage import LazyTensorStorage
from rlexp.registry import replay_transforms

__all__ = ["LazyTensorStorage", "MultiStepTransform", "n_step_rollout", "RandomSampler", "ReplayBuffer", "SamplerWithoutReplacement",
           "SliceSampler"]


@replay_transforms.register("none")
def no_transform() -> None:
    """Collected batches go to the value estimator unchanged."""
    return None


@replay_transforms.register("multistep")
def multistep(*, n_steps: int = 3, gamma: float = 0.99) -> MultiStepTransform:
    """n-step rewards: the trainer calls ``inv`` on each ``[num_envs, T]`` rollout before value estimation."""
    return MultiStepTransform(n_steps=n_steps, gamma=gamma)
