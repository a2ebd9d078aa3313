"""rlexp: Hydra-configured RL experiments on tensordict, with torchrl's loss API."""

__version__ = "0.1.0"
