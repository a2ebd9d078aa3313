"""Training throughput of policy=gru against policy=mlp on env=cartpole_masked, measured in one process.

Run: .venv/bin/python experiments/benchmarks/gru_throughput.py [--frames 40960] [--repeats 2] [overrides ...]
Trains each policy alternately with the default config (clip_ppo, GAE, 16 envs, 2048-frame
rollouts, 4 epochs x 4 minibatches) and reports frames per training second (collection plus
updates; evaluation excluded), then the ratio gru / mlp (issue 8's target: at least 0.5).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rlexp.config import compose_config
from rlexp.loggers import Logger
from rlexp.trainer import train


def frames_per_second(policy: str, frames: int, overrides: list[str]) -> float:
    cfg = compose_config(f"policy={policy}", "env=cartpole_masked", "logger=none", f"collector.total_frames={frames}",
                         f"eval.interval={10 * frames}", "eval.episodes=1", *overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        result = train(cfg, Path(run_dir), make_logger=Logger)
    return result["frames"] / result["train/seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40960)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs")
    args = parser.parse_args()
    fps: dict[str, list[float]] = {"mlp": [], "gru": []}
    for _ in range(args.repeats):
        for policy in fps:
            fps[policy].append(frames_per_second(policy, args.frames, args.overrides))
    best = {policy: max(values) for policy, values in fps.items()}
    for policy, values in fps.items():
        print(f"{policy}: {best[policy]:,.0f} frames/s (runs: {', '.join(f'{v:,.0f}' for v in values)})")
    print(f"ratio gru/mlp: {best['gru'] / best['mlp']:.2f}")


if __name__ == "__main__":
    main()
