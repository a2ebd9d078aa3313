"""``python -m rlexp.evaluate <checkpoint> [episodes=N] [seed=S] [video=true]``: evaluation returns of a saved policy.

Everything needed comes from the checkpoint (its resolved config, the actor's parameters and the
training envs' normalisation statistics, frozen), so the training config does not have to be at hand.
A run folder stands for its newest intact checkpoint. Prints the mean, std, min and max return over
``episodes`` deterministic episodes (default: the run's ``eval.episodes``). ``video=true`` also records
the first episode as ``<run>/videos/evaluate_<frames>_seed<S>.mp4``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch


def evaluate_checkpoint(path: str | Path, episodes: int | None = None, seed: int = 0,
                        video: bool = False) -> torch.Tensor:
    """Returns of ``episodes`` deterministic episodes of the checkpoint's policy, one per env.

    With ``video`` the first episode is recorded into the run folder's ``videos/`` (its path is printed).
    """
    from rlexp.checkpoint import latest_resumable, load_checkpoint, run_folder
    from rlexp.collector import evaluate
    from rlexp.envs import Normalizer, build_env
    from rlexp.registry import policies
    from rlexp.video import VIDEO_DIR, VideoRecorder, render_options

    path, run_seed = Path(path), None
    if path.is_dir() and path.name[:4] == "seed" and path.name[4:].isdigit() and not any(path.glob("*.pt")):
        path, run_seed = path.parent, int(path.name[4:])  # a seed's folder in a num_seeds run
    state = latest_resumable(path)[1] if path.is_dir() else load_checkpoint(path)
    if "seeds" in state:
        state = one_seed(state, run_seed, path)
    config, actor_state = state["config"], state["actor"]
    for module in config.get("imports", []):
        importlib.import_module(module)
    video_options = render_options(config["env"]) if video else {}
    env = build_env({**config["env"], **video_options}, episodes or config["eval"]["episodes"], evaluation=True)
    env.freeze_statistics(Normalizer.from_state_dict(config["env"].get("normalize"), state["collector"]["env"]))
    actor, _ = policies.build({**config["policy"], "critic": False}, env.observation_space, env.action_space)
    actor.load_state_dict(actor_state)
    recording = None
    if video:
        recorder = VideoRecorder(env, config["env"], run_folder(path) / VIDEO_DIR)
        recording = recorder.record(f"evaluate_{state['frames']:012d}_seed{seed}")
    returns = evaluate(recording or env, actor.eval(), torch.device("cpu"), seed=seed)["episode_return"]
    env.close()
    if recording:
        print(f"video: {recording.path}")
    return returns


def one_seed(state: dict, seed: int | None, path: Path) -> dict:
    """A ``num_seeds`` checkpoint's view of one seed: its config, actor and observation statistics."""
    from rlexp.registry import ConfigError

    seeds = list(state["seeds"])
    if seed not in seeds:
        raise ConfigError(f"{path} holds the seeds {seeds[0]}..{seeds[-1]} of a num_seeds run: evaluate one of them "
                          f"by its folder, e.g. {path}/seed{seeds[0]}.")
    k = seeds.index(seed)
    env_state = dict(state["collector"]["env"])
    if env_state.get("normalizer") is not None:
        rms = env_state["normalizer"]["obs_rms"]
        env_state["normalizer"] = {**env_state["normalizer"], "obs_rms": rms and {**rms, "mean": rms["mean"][k],
                                                                                  "var": rms["var"][k]}}
    return {**state, "config": {**state["config"], "seed": seed}, "actor": state["actors"][k],
            "frames": int(state["seed_frames"][k]), "collector": {**state["collector"], "env": env_state}}


def main(argv: list[str]) -> int:
    from rlexp.registry import ConfigError

    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    options = dict(arg.split("=", 1) for arg in argv[1:] if "=" in arg)
    unknown = set(options) - {"episodes", "seed", "video"} or [arg for arg in argv[1:] if "=" not in arg]
    if unknown:
        print(f"rlexp.evaluate: unknown argument(s) {sorted(unknown)}; accepted: episodes=N, seed=S, video=true|false",
              file=sys.stderr)
        return 2
    video = options.get("video", "false").lower()
    if video not in ("true", "false"):
        print(f"rlexp.evaluate: video={options['video']!r}; choose one of: true, false", file=sys.stderr)
        return 2
    numbers = {"episodes": None, "seed": 0}
    for key, low in (("episodes", 1), ("seed", 0)):
        if key in options:
            if not options[key].isdigit() or int(options[key]) < low:
                print(f"rlexp.evaluate: {key}={options[key]!r} must be an integer >= {low}", file=sys.stderr)
                return 2
            numbers[key] = int(options[key])
    try:
        returns = evaluate_checkpoint(argv[0], numbers["episodes"], numbers["seed"], video=video == "true")
    except ConfigError as err:
        print(f"rlexp.evaluate: {err}", file=sys.stderr)
        return 2
    print(f"episodes: {returns.numel()}  mean return: {returns.mean():.2f}  std: {returns.std(unbiased=False):.2f}  "
          f"min: {returns.min():.2f}  max: {returns.max():.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
