"""``python -m rlexp.evaluate <checkpoint> [episodes=N] [seed=S]``: evaluation returns of a saved policy.

Everything needed comes from the checkpoint (its resolved config and the actor's parameters), so
the training config does not have to be at hand. Prints the mean, std, min and max return over
``episodes`` deterministic episodes (default: the run's ``eval.episodes``).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch


def evaluate_checkpoint(path: str | Path, episodes: int | None = None, seed: int = 0) -> torch.Tensor:
    """Returns of ``episodes`` deterministic episodes of the checkpoint's policy, one per env."""
    import rlexp.envs  # noqa: F401  (registers the built-in envs and policies)
    import rlexp.policies  # noqa: F401
    from rlexp.collector import evaluate
    from rlexp.registry import ConfigError, envs, policies

    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise ConfigError(f"{path} does not exist; give a checkpoint file or a run folder holding checkpoint.pt.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        config, actor_state = state["config"], state["actor"]
    except Exception as err:  # noqa: BLE001  (any unreadable file is reported the same way)
        raise ConfigError(f"{path} is not a readable rlexp checkpoint ({type(err).__name__}: {err}).") from None
    for module in config.get("imports", []):
        importlib.import_module(module)
    env = envs.build({**config["env"], "num_envs": episodes or config["eval"]["episodes"]})
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
