"""Break-even of ``trainer.compile=true``: cold compile time against the steady-state gain per update.

    python experiments/benchmarks/compile.py             # CartPole's default config and tuned Hopper
    python experiments/benchmarks/compile.py --pairs 5 --write   # also experiments/results/compile.md

Per config, two trainers are built from the same seed, one eager and one compiled, and each collects one
rollout and estimates its advantages. The compiled trainer's first update holds the cold compile; then
``--pairs`` pairs of updates (``optim.ppo_epochs`` epochs over the rollout's minibatches) alternate eager
and compiled, so both see the same background load, and their medians give the gain per update. Break-even:
``(first compiled update - eager update) / (eager - compiled)`` updates, times ``collector.frames_per_batch``
frames. One torch thread; on a shared machine only the side-by-side ratios mean much.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

# This folder holds a mujoco.py of its own, which would shadow the mujoco package that the MuJoCo envs import.
sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from rlexp.config import ROOT, compose_config  # noqa: E402
from rlexp.trainer import Trainer, seed_everything  # noqa: E402

RESULTS = ROOT / "experiments" / "results" / "compile.md"
CONFIGS = {"cartpole (default)": ["env=cartpole"], "hopper (tuned)": ["env=hopper"]}


def timed_update(trainer: Trainer, rollout) -> float:
    start = time.perf_counter()
    trainer.update(rollout)
    return time.perf_counter() - start


def measure(overrides: list[str], pairs: int) -> dict[str, float]:
    """Seconds of the cold compiled update and the median eager and compiled updates, and the break-even."""
    torch._dynamo.reset()  # a fresh compiler per config: guards built for another config's modules can fail
    trainers = {}
    with tempfile.TemporaryDirectory() as folder:
        for compiled in (False, True):
            seed_everything(0)
            cfg = compose_config("logger=none", *overrides, f"trainer.compile={str(compiled).lower()}")
            trainer = Trainer(cfg, torch.device("cpu"), {}, video_dir=Path(folder))
            rollout, _ = trainer.collect()
            trainer.estimate_advantages(rollout)
            trainers[compiled] = trainer, rollout
        cold = timed_update(*trainers[True])
        times = {False: [], True: []}
        for _ in range(pairs):
            for compiled in (False, True):
                times[compiled].append(timed_update(*trainers[compiled]))
        for trainer, _ in trainers.values():
            trainer.close()
    eager, fast = statistics.median(times[False]), statistics.median(times[True])
    updates = (cold - eager) / (eager - fast) if eager > fast else float("inf")
    return {"frames_per_batch": cfg.collector.frames_per_batch, "cold": cold, "eager": eager, "compiled": fast,
            "speedup": eager / fast, "break_even_updates": updates,
            "break_even_frames": updates * cfg.collector.frames_per_batch}


def report(pairs: int) -> str:
    lines = [f"# torch.compile of the update: break-even ({datetime.now():%Y-%m-%d}, torch {torch.__version__}, "
             f"1 thread, {pairs} interleaved pairs)", "",
             "| config | frames/update | cold compiled update (s) | eager update (s) | compiled update (s) | speed-up | "
             "break-even updates | break-even frames |", "|---|---|---|---|---|---|---|---|"]
    for name, overrides in CONFIGS.items():
        r = measure(overrides, pairs)
        lines.append(f"| {name} | {r['frames_per_batch']:,} | {r['cold']:.1f} | {r['eager']:.3f} | {r['compiled']:.3f} | "
                     f"{r['speedup']:.2f}x | " + (f"{r['break_even_updates']:,.0f} | {r['break_even_frames']:,.0f} |"
                     if math.isfinite(r["break_even_updates"]) else "never | never |"))
        print(lines[-1], flush=True)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="interleaved eager/compiled update pairs (>= 3)")
    parser.add_argument("--write", action="store_true", help=f"also write {RESULTS.relative_to(ROOT)}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    text = report(args.pairs)
    print(text)
    if args.write:
        RESULTS.write_text(text)


if __name__ == "__main__":
    main()
