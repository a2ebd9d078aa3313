"""``python -m rlexp.evaluate <checkpoint> [episodes=N] [seed=S]``: evaluation returns of a saved policy.

Everything needed comes from the checkpoint (its resolved config, the actor's parameters and the
training envs' normalisation statistics, frozen), so the training config does not have to be at hand. A run folder stands for its newest intact checkpoint. Prints the mean, std, min and max return over
``episodes`` deterministic episodes (default: the run's ``eval.episodes``).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch


def evaluate_checkpoint(path: str | Path, episodes: int | None = None, seed: int = 0) -> torch.Tensor:
    """Returns of ``episodes`` deterministic episodes of the checkpoint's policy, one per env."""
    import rlexp.policies  # noqa: F401  (registers the built-in policies)
    from rlexp.checkpoint import latest_resumable, load_checkpoint
    from rlexp.collector import evaluate
    from rlexp.envs import Normalizer, build_env
    from rlexp.registry import policies

    path = Path(path)
    state = latest_resumable(path)[1] if path.is_dir() else load_checkpoint(path)
    config, actor_state = state["config"], state["actor"]
    for module in config.get("imports", []):
        importlib.import_module(module)
    env = build_env(config["env"], episodes or config["eval"]["episodes"], evaluation=True)
    env.freeze_statistics(Normalizer.from_state_dict(config["env"].get("normalize"), state["collector"]["env"]))
    actor, _ = policies.build({**config["policy"], "critic": False}, env.observation_space, env.action_space)
    actor.load_state_dict(actor_state)
    returns = evaluate(env, actor.eval(), torch.device("cpu"), seed=seed)["episode_return"]
    env.close()
    return returns


def main(argv: list[str]) -> int:
    from rlexp.registry import ConfigError

    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    options = dict(arg.split("=", 1) for arg in argv[1:] if "=" in arg)
    unknown = set(options) - {"episodes", "seed"} or [arg for arg in argv[1:] if "=" not in arg]
    if unknown:
        print(f"rlexp.evaluate: unknown argument(s) {sorted(unknown)}; accepted: episodes=N, seed=S", file=sys.stderr)
        return 2
    try:
        returns = evaluate_checkpoint(argv[0], int(options["episodes"]) if "episodes" in options else None,
                                      int(options.get("seed", 0)))
    except ConfigError as err:
        print(f"rlexp.evaluate: {err}", file=sys.stderr)
        return 2
    print(f"episodes: {returns.numel()}  mean return: {returns.mean():.2f}  std: {returns.std(unbiased=False):.2f}  "
          f"min: {returns.min():.2f}  max: {returns.max():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
