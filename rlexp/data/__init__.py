"""Replay data: the ``replay_transform`` config group's registry entries."""

from rlexp.registry import replay_transforms


@replay_transforms.register("none")
def no_transform() -> None:
    """Collected batches go to the value estimator unchanged."""
    return None
