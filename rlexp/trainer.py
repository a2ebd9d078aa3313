"""The training loop: collect -> replay transform -> advantages -> PPO epochs over minibatches -> log.

Every piece comes from a registry selected by the config (env, policy, loss, value estimator,
replay transform), so the loop below is the whole algorithm for every combination.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

import rlexp.data  # noqa: F401  (registers the built-in replay transforms)
import rlexp.envs  # noqa: F401  (registers the built-in envs)
import rlexp.objectives  # noqa: F401  (registers the built-in losses)
import rlexp.objectives.value  # noqa: F401  (registers the built-in value estimators)
import rlexp.policies  # noqa: F401  (registers the built-in policies)
from rlexp.checkpoint import save_checkpoint
from rlexp.collector import Collector, evaluate
from rlexp.loggers import Logger
from rlexp.registry import ConfigError, envs, losses, policies, replay_transforms, value_estimators


def train(cfg: DictConfig, run_dir: Path, make_logger: Callable[[], Logger]) -> dict[str, float]:
    """Train with ``cfg``; return the final evaluation metrics. Checkpoint goes to ``run_dir``.

    Everything is built (and every config error raised) before ``make_logger`` opens the run.
    """
    device = resolve_device(cfg.device)
    frames_per_batch, iterations, minibatch_size = batch_sizes(cfg)
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads)

    env = envs.build(cfg.env)
    eval_env = envs.build({**cfg.env, "num_envs": cfg.eval.episodes})
    actor, critic = policies.build(cfg.policy, env.observation_space, env.action_space)
    actor, critic = actor.to(device), critic.to(device)
    loss_module = losses.build(cfg.loss, actor, critic).to(device)
    loss_module.make_value_estimator(value_estimators.build(cfg.value_estimator, value_network=critic))
    replay_transform = replay_transforms.build(cfg.replay_transform)
    optimizer = torch.optim.Adam(loss_module.parameters(), lr=cfg.optim.lr, eps=cfg.optim.eps)
    anneal = (lambda i: 1.0 - i / iterations) if cfg.optim.anneal_lr else (lambda i: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, anneal)
    collector = Collector(env, actor, frames_per_batch, device, seed=cfg.seed)
    eval_seed = cfg.seed + 1_000_003  # first evaluation only; later ones continue the env's RNG

    frames, train_seconds, next_eval = 0, 0.0, cfg.eval.interval
    eval_metrics: dict[str, float] = {}
    with make_logger() as logger, tqdm(total=iterations * frames_per_batch, unit="frame", unit_scale=True,
                                        dynamic_ncols=True, mininterval=1.0) as progress:
        for iteration in range(1, iterations + 1):
            start = time.perf_counter()
            rollout = collector.collect()  # [num_envs, T]
            if replay_transform is not None:
                rollout = replay_transform.inv(rollout)
            with torch.no_grad():
                loss_module.value_estimator(rollout)  # writes advantage, value_target, state_value
            batch = rollout.reshape(-1)

            loss_outputs = []
            for _epoch in range(cfg.optim.ppo_epochs):
                for indices in torch.randperm(batch.numel(), device=device).split(minibatch_size):
                    loss_td = loss_module(batch[indices])
                    loss = sum(value for key, value in loss_td.items() if key.startswith("loss_"))
                    optimizer.zero_grad()
                    loss.backward()
                    grad_norm = torch.nn.utils.clip_grad_norm_(loss_module.parameters(), cfg.optim.max_grad_norm)
                    optimizer.step()
                    loss_outputs.append(loss_td.detach().apply(lambda x: x.float().mean()).set("grad_norm", grad_norm))
            lr = scheduler.get_last_lr()[0]
            scheduler.step()

            elapsed = time.perf_counter() - start
            frames += frames_per_batch
            train_seconds += elapsed
            means = torch.stack(loss_outputs).apply(lambda x: x.mean(), batch_size=[])
            metrics = {key: value.item() for key, value in means.items() if key != "grad_norm"}
            metrics |= {"train/grad_norm": means["grad_norm"].item(), "train/lr": lr,
                        "train/fps": frames_per_batch / elapsed, "train/iteration": iteration,
                        "train/seconds": train_seconds} | episode_metrics(env)
            if frames >= next_eval or iteration == iterations:
                eval_metrics = prefixed("eval", evaluate(eval_env, actor, device, seed=eval_seed))
                eval_seed, next_eval = None, next_eval + cfg.eval.interval
                metrics |= eval_metrics
            logger.log(metrics, step=frames)
            progress.update(frames_per_batch)
            progress.set_postfix(fps=f"{metrics['train/fps']:,.0f}",
                                 ret=f"{metrics.get('train/episode_return', float('nan')):.1f}",
                                 eval=f"{eval_metrics.get('eval/episode_return', float('nan')):.1f}")

        save_checkpoint(
            {"actor": actor.state_dict(), "critic": critic.state_dict(), "loss": loss_module.state_dict(),
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "frames": frames,
             "iteration": iterations, "config": OmegaConf.to_container(cfg, resolve=True)},
            run_dir / "checkpoint.pt",
        )
    env.close()
    eval_env.close()
    return {"frames": frames, "train/seconds": train_seconds, **eval_metrics}


def batch_sizes(cfg: DictConfig) -> tuple[int, int, int]:
    """``(frames_per_batch, iterations, minibatch_size)``, checked for divisibility."""
    frames_per_batch, num_envs = cfg.collector.frames_per_batch, cfg.env.num_envs
    minibatches = cfg.optim.num_minibatches
    if frames_per_batch % num_envs:
        raise ConfigError(f"collector.frames_per_batch={frames_per_batch} is not divisible by env.num_envs={num_envs}.")
    if minibatches < 1 or frames_per_batch % minibatches:
        raise ConfigError(f"collector.frames_per_batch={frames_per_batch} is not divisible by "
                          f"optim.num_minibatches={minibatches}.")
    iterations = cfg.collector.total_frames // frames_per_batch
    if iterations < 1:
        raise ConfigError(f"collector.total_frames={cfg.collector.total_frames} is less than one batch "
                          f"(collector.frames_per_batch={frames_per_batch}).")
    return frames_per_batch, iterations, frames_per_batch // minibatches


def episode_metrics(env) -> dict[str, float]:
    """Mean return and length of the training episodes that ended since the last call."""
    episodes = env.pop_finished_episodes()
    if not len(episodes["return"]):
        return {}
    return {"train/episode_return": float(episodes["return"].mean()),
            "train/episode_length": float(episodes["length"].mean()),
            "train/episodes": len(episodes["return"]),
            "train/truncated_episodes": int(episodes["truncated"].sum())}


def prefixed(prefix: str, values: dict[str, torch.Tensor]) -> dict[str, float]:
    return {f"{prefix}/{key}": value.float().mean().item() for key, value in values.items()}


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` (fails clearly without CUDA) or ``auto`` (CUDA when available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"device={name!r}; choose one of: cpu, cuda, cuda:<index>, auto.")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} was requested but CUDA is not available to torch {torch.__version__} "
                          "on this machine. Use device=cpu or device=auto.")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

