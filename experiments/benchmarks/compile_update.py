"""Does ``optim.compile=true`` pay? The trainer's update, eager and compiled, interleaved on the same rollout.

    python experiments/benchmarks/compile_update.py                     # env=hopper (its tuned config)
    python experiments/benchmarks/compile_update.py +experiment=cleanrl_mujoco env=hopper
    python experiments/benchmarks/compile_update.py --device cuda env=hopper    # the update on a GPU

Positional arguments are Hydra overrides, as for ``python -m rlexp``. One process, one torch thread: two
trainers built from the same seed, one with ``optim.compile=false`` and one with ``true``; one rollout
collected and its advantages estimated; then each trainer's own ``update`` (every epoch and minibatch:
loss, backward, NaN guard, clipping, Adam) runs on it, in alternating order each round.

It prints the first compiled update's extra time (the cold compile), dynamo's graph breaks, per round the
seconds per update of each and their ratio, then the median ratio and the break-even: how many
iterations (and frames) a run needs before the compiled update has paid its compile time back.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torch._dynamo.utils import counters

from rlexp.config import compose_config
from rlexp.trainer import Trainer, seed_everything, unchecked_distributions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", default=["env=hopper"])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--device", default="cpu", help="the device the networks and the update run on")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(1)
    trainers = {}
    for name in ("eager", "compiled"):
        cfg = compose_config(*args.overrides, "logger=none", f"device={args.device}",
                             f"optim.compile={name == 'compiled'}")
        seed_everything(cfg.seed)
        trainers[name] = Trainer(cfg, device, {}, video_dir=Path(tempfile.mkdtemp()))
    rollout, _ = trainers["eager"].collect()
    trainers["eager"].estimate_advantages(rollout)

    # CUDA kernels run behind Python: wait for them on both ends of a timed update.
    synchronize = torch.cuda.synchronize if device.type == "cuda" else lambda: None

    def seconds(name: str) -> float:
        synchronize()
        start = time.perf_counter()
        trainers[name].update(rollout)
        synchronize()
        return time.perf_counter() - start

    steps = cfg.optim.ppo_epochs * cfg.optim.num_minibatches
    print(f"{' '.join(args.overrides)} on {device}: {cfg.collector.frames_per_batch} frames per iteration, "
          f"{steps} minibatch steps per update; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    with unchecked_distributions():
        first = seconds("compiled") - seconds("eager")
        print(f"cold compile (first compiled update beyond an eager one): {first:.1f} s; graph breaks: "
              f"{sum(counters['graph_break'].values())}")
        ratios, saved = [], []
        for round_ in range(args.rounds):
            order = ("eager", "compiled") if round_ % 2 == 0 else ("compiled", "eager")
            times = {name: seconds(name) for name in order}
            ratios.append(times["eager"] / times["compiled"])
            saved.append(times["eager"] - times["compiled"])
            print(f"round {round_}: eager {times['eager']:.3f} s, compiled {times['compiled']:.3f} s per update: "
                  f"{ratios[-1]:.2f}x")
    print(f"median speed-up of the update: {statistics.median(ratios):.2f}x "
          f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})")
    if statistics.median(saved) > 0:
        iterations = first / statistics.median(saved)
        print(f"break-even after {iterations:,.0f} iterations = {iterations * cfg.collector.frames_per_batch:,.0f} "
              f"frames (this config's run: {cfg.collector.total_frames:,} frames)")
    else:
        print("the compiled update was not faster: no break-even")


if __name__ == "__main__":
    main()
