"""A run's configuration identity: its Hydra overrides minus the seed and the overrides that do not change training."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# Top-level names whose overrides do not make another configuration: the seed, Hydra's own settings
# (launcher, job, sweep dirs) and the logger (where metrics go, not what is trained).
NOISE = frozenset({"seed", "hydra", "logger"})


def override_group(override: str) -> str:
    """The top-level name an override sets: ``+loss.clip_epsilon=0.1`` -> ``loss``, ``hydra/launcher=x`` -> ``hydra``."""
    name = override.split("=", 1)[0].lstrip("+~")
    return re.split(r"[./]", name, maxsplit=1)[0]


def config_key(overrides: Iterable[str], experiment: str) -> tuple[str, ...]:
    """The sorted overrides minus noise; ``(experiment,)`` for a run without any."""
    kept = tuple(sorted(o for o in overrides if override_group(o) not in NOISE))
    return kept or (str(experiment),)


def config_labels(keys: Sequence[tuple[str, ...]]) -> tuple[list[str], tuple[str, ...]]:
    """Short labels (each key minus the overrides all keys share) and the shared overrides.

    Nothing is dropped when that would leave a key with an empty label.
    """
    common = set.intersection(*(set(key) for key in keys)) if len(keys) > 1 else set()
    if any(not set(key) - common for key in keys):
        common = set()
    labels = [",".join(o for o in key if o not in common) for key in keys]
    return labels, tuple(sorted(common))
