"""The training loop: collect -> replay transform -> advantages -> epochs over minibatches -> log.

Every piece comes from a registry selected by the config (env, policy, loss, value estimator,
replay transform), so the loop below is the whole algorithm for every combination: PPO-family
losses on fixed-length rollouts, GRPO on grouped whole episodes (``collector.group_size``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDict
from tqdm import tqdm

import rlexp.data  # noqa: F401  (registers the built-in replay transforms)
import rlexp.envs  # noqa: F401  (registers the built-in envs)
import rlexp.objectives  # noqa: F401  (registers the built-in losses)
import rlexp.objectives.value  # noqa: F401  (registers the built-in value estimators)
import rlexp.policies  # noqa: F401  (registers the built-in policies)
from rlexp.checkpoint import FINAL, PERIODIC_DIR, rng_states, save_checkpoint, save_periodic, set_rng_states
from rlexp.collector import MASK, Collector, EpisodeCollector, evaluate
from rlexp.loggers import Logger
from rlexp.modules import set_recurrent_mode
from rlexp.objectives import GRPOLoss
from rlexp.objectives.value import TD0Estimator
from rlexp.policies import RecurrentStates, rollout_policy
from rlexp.registry import ConfigError, envs, losses, policies, replay_transforms, value_estimators
from rlexp.signals import Interrupted, StopRequest
from rlexp.video import VIDEO_DIR, VIDEO_KEY, VideoRecorder, render_options
from rlexp.validation import validate_config


def train(cfg: DictConfig, run_dir: Path, make_logger: Callable[[], Logger], *, run: Mapping[str, str] = {},
          resume: Mapping | None = None, stop: StopRequest | None = None) -> dict[str, float]:
    """Train with ``cfg``; return the final evaluation metrics. Checkpoints go to ``run_dir``.

    Everything is built (and every config error raised) before ``make_logger`` opens the run.
    ``run`` (logger run id, name, group) is stored in checkpoints; ``resume`` is a checkpoint's
    contents to continue from, bit for bit on CPU. When ``stop`` is set (SIGINT/SIGTERM) the loop
    ends after the current iteration, writes a checkpoint and raises ``Interrupted``.
    """
    validate_config(cfg)
    device = resolve_device(cfg.device)
    check_batch_sizes(cfg)
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads)

    env = envs.build(cfg.env)
    video_options = render_options(cfg.env) if cfg.eval.video else {}  # render_mode for evaluation videos
    eval_env = envs.build({**cfg.env, "num_envs": cfg.eval.episodes, **video_options})
    video = VideoRecorder(eval_env, cfg.env, run_dir / VIDEO_DIR, cfg.eval.video_every) if cfg.eval.video else None
    actor, critic = policies.build(cfg.policy, env.observation_space, env.action_space)
    actor, critic = actor.to(device), critic.to(device) if critic is not None else None
    replay_transform = replay_transforms.build(cfg.replay_transform)
    if replay_transform is not None and cfg.collector.group_size:
        raise ConfigError(f"replay_transform={cfg.replay_transform.name} cannot be combined with grouped episode "
                          "collection (collector.group_size, used by loss=grpo); use replay_transform=none.")
    loss_module = losses.build(cfg.loss, actor, critic).to(device)
    loss_module.make_value_estimator(value_estimators.build(cfg.value_estimator, value_network=critic))
    if replay_transform is not None and not isinstance(loss_module.value_estimator, TD0Estimator):
        raise ConfigError(
            f"replay_transform={cfg.replay_transform.name} writes n-step rewards, which only value_estimator=td0 "
            f"bootstraps correctly (as gamma**steps_to_next_obs); value_estimator={cfg.value_estimator.name} would "
            "sum rewards over steps twice. Use value_estimator=td0 or replay_transform=none.")
    reference = ReferencePolicy.for_loss(loss_module, actor)
    sequence_length = minibatch_sequence_length(cfg, actor, critic)
    parameters = list(loss_module.parameters())
    # foreach: the for-loop Adam's numbers, bit for bit, at less cost; fused=True is faster still on the CPU
    # but rounds differently, so every recorded result would move.
    optimizer = torch.optim.Adam(parameters, lr=cfg.optim.lr, eps=cfg.optim.eps, foreach=True)
    if cfg.collector.group_size:
        collector = EpisodeCollector(env, actor, cfg.collector.group_size, device, seed=cfg.seed)
    else:
        collector = Collector(env, rollout_policy(actor, critic), cfg.collector.frames_per_batch, device,
                              seed=cfg.seed)
    actor.train(not isinstance(loss_module, GRPOLoss))  # GRPO keeps its policy in eval mode throughout
    progress = Progress(next_eval=cfg.eval.interval, next_checkpoint=cfg.checkpoint.interval,
                        eval_seed=cfg.seed + 1_000_003)  # first evaluation only; later ones continue the env's RNG

    def checkpoint_state() -> dict:
        return {"config": OmegaConf.to_container(cfg, resolve=True), "run": dict(run), "resumable": True,
                "frames": progress.frames, "iteration": progress.iteration, "progress": asdict(progress),
                "actor": actor.state_dict(), "critic": critic.state_dict() if critic is not None else None,
                "loss": loss_module.state_dict(), "optimizer": optimizer.state_dict(),
                "reference": reference.frozen.state_dict() if reference is not None else None,
                "replay_transform": replay_transform.state_dict() if replay_transform is not None else None,
                "collector": collector.state_dict(), "eval_env": eval_env.state_dict(), "rng": rng_states()}

    if resume is not None:
        progress = Progress(**resume["progress"])
        loss_module.load_state_dict(resume["loss"])  # holds the actor's and critic's parameters too
        optimizer.load_state_dict(resume["optimizer"])
        if reference is not None:
            reference.frozen.load_state_dict(resume["reference"])
        if replay_transform is not None:
            replay_transform.load_state_dict(resume["replay_transform"])
        collector.load_state_dict(resume["collector"], seed=cfg.seed + progress.iteration)
        eval_env.load_state_dict(resume["eval_env"])
        set_rng_states(resume["rng"])

    total_frames = cfg.collector.total_frames
    with make_logger() as logger, tqdm(initial=progress.frames, total=total_frames, unit="frame", unit_scale=True,
                                        dynamic_ncols=True, mininterval=1.0) as bar, unchecked_distributions():
        while progress.frames < total_frames:
            start = time.perf_counter()
            progress.iteration += 1
            lr = cfg.optim.lr * (1.0 - progress.frames / total_frames if cfg.optim.anneal_lr else 1.0)
            for group in optimizer.param_groups:
                group["lr"] = lr

            rollout = collector.collect()  # [num_envs, T]
            new_frames = int(rollout[MASK].sum()) if MASK in rollout.keys(True) else rollout.numel()
            progress.frames += new_frames
            if reference is not None:
                reference.write_log_prob(rollout, progress.iteration)
            if replay_transform is not None:
                rollout = n_step_rollout(replay_transform, rollout)
                if rollout is None:  # the transform holds the first n_steps frames back
                    continue
            with torch.no_grad(), set_recurrent_mode(True):  # a recurrent critic runs over whole rows
                loss_module.value_estimator(rollout)  # writes advantage (and value_target, state_value)
            minibatches = Minibatches(rollout, cfg.optim.num_minibatches, sequence_length)

            loss_outputs = []
            for _epoch in range(cfg.optim.ppo_epochs):
                for minibatch in minibatches:
                    loss_td = loss_module(minibatch)
                    loss = sum(value for key, value in loss_td.items() if key.startswith("loss_"))
                    optimizer.zero_grad()
                    fault = non_finite_loss_terms(loss_td) if not torch.isfinite(loss) else None
                    if fault is None:
                        loss.backward()
                        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, cfg.optim.max_grad_norm, foreach=True)
                        fault = non_finite_gradients(loss_module) if not torch.isfinite(grad_norm) else None
                    if fault is not None:  # the step would spread it: skip the update, or stop
                        if cfg.trainer.on_nan == "skip":
                            progress.skipped_batches += 1
                            continue
                        save_checkpoint({**checkpoint_state(), "resumable": False}, run_dir / FINAL)
                        raise NonFiniteLoss(fault, progress.iteration, progress.frames)
                    optimizer.step()
                    with torch.no_grad():  # one stacked row of scalars per minibatch, averaged per iteration
                        values = [x.float() if x.ndim == 0 else x.float().mean() for x in loss_td.values()]
                        loss_outputs.append(torch.stack([*values, grad_norm]))

            elapsed = time.perf_counter() - start
            progress.train_seconds += elapsed
            metrics = {"train/lr": lr, "train/fps": new_frames / elapsed, "train/iteration": progress.iteration,
                       "train/seconds": progress.train_seconds} | episode_metrics(collector)
            if loss_outputs:  # loss_td's entries (same keys every minibatch) and the gradient norm, averaged
                means = torch.stack(loss_outputs, dim=1).mean(1)  # rows contiguous: the per-key means of before
                metrics |= dict(zip([*loss_td.keys(), "train/grad_norm"], means.tolist()))
            if cfg.trainer.on_nan == "skip":
                metrics["train/skipped_batches"] = progress.skipped_batches
            if hasattr(loss_module.value_estimator, "group_statistics"):
                metrics |= prefixed("train", loss_module.value_estimator.group_statistics(rollout))
            if progress.frames >= progress.next_eval or progress.frames >= total_frames:
                recording = video and video.recording(progress.next_eval // cfg.eval.interval, progress.frames,
                                                      final=progress.frames >= total_frames)
                returns = evaluate(recording or eval_env, actor, device, seed=progress.eval_seed)
                progress.eval_metrics = prefixed("eval", returns)
                progress.eval_seed, progress.next_eval = None, progress.next_eval + cfg.eval.interval
                metrics |= progress.eval_metrics
                if recording:
                    logger.log_video(VIDEO_KEY, recording.path, step=progress.frames)
            logger.log(metrics, step=progress.frames)
            if progress.frames >= progress.next_checkpoint:
                save_periodic(checkpoint_state(), run_dir, progress.frames, cfg.checkpoint.keep)
                progress.next_checkpoint += cfg.checkpoint.interval
            bar.update(new_frames)
            bar.set_postfix(fps=f"{metrics['train/fps']:,.0f}",
                            ret=f"{metrics.get('train/episode_return', float('nan')):.1f}",
                            eval=f"{progress.eval_metrics.get('eval/episode_return', float('nan')):.1f}")
            if stop and progress.frames < total_frames:  # SIGINT/SIGTERM: at an iteration's end, resumable exactly
                path = save_periodic(checkpoint_state(), run_dir, progress.frames, cfg.checkpoint.keep)
                raise Interrupted(stop.signum, f" at {progress.frames:,} frames; checkpoint {path}")

        save_checkpoint(checkpoint_state(), run_dir / FINAL)
    env.close()
    eval_env.close()
    return {"frames": progress.frames, "train/seconds": progress.train_seconds, **progress.eval_metrics}


@dataclass
class Progress:
    """The loop's counters and schedule; saved in checkpoints so a resumed run continues the same way."""

    frames: int = 0
    iteration: int = 0
    train_seconds: float = 0.0
    next_eval: int = 0
    next_checkpoint: int = 0
    skipped_batches: int = 0
    eval_seed: int | None = None  # the first evaluation's env seed; None once used
    eval_metrics: dict[str, float] = field(default_factory=dict)


def n_step_rollout(transform, rollout: TensorDict) -> TensorDict | None:
    """The multi-step transform's output, with ``("next", "terminated")`` of each window's last step.

    torchrl's transform keeps the one-step done flags, so a window that runs into a termination would
    bootstrap from the (never trained) value of the terminal observation. Carried as an ordinary
    ``"next"`` entry, the flag is moved to the window end like the next observation, which gives true
    n-step TD targets.
    """
    rollout["next", "window_terminated"] = rollout["next", "terminated"]
    rollout = transform.inv(rollout)
    if rollout is not None:
        rollout["next", "terminated"] = rollout["next"].pop("window_terminated")
    return rollout


class Minibatches:
    """The rollout as minibatches: each iteration over it is one epoch of ``num_minibatches`` shuffled ones.

    Feed-forward policies (``sequence_length=None``): the valid frames, one by one. Recurrent
    policies: contiguous ``[sequence_length]`` time slices of the ``[num_envs, T]`` rollout (whole
    rows for 0), so a minibatch is ``[slices, sequence_length]`` and each slice restarts the GRU
    from the state stored at its first step. Masked rollouts (GRPO) keep whole rows; the loss
    ignores their padding through ``("collector", "mask")``. The ``"next"`` entries are left out:
    the advantages are computed, so no loss reads them, and every minibatch index copies less.
    """

    def __init__(self, rollout: TensorDict, num_minibatches: int, sequence_length: int | None = None):
        rollout = rollout.exclude("next")
        masked = MASK in rollout.keys(True)
        if sequence_length is None:
            self.batch = rollout[rollout[MASK]] if masked else rollout.reshape(-1)
        else:
            steps = rollout.shape[-1]
            length = steps if masked or not sequence_length else sequence_length
            if steps % length:
                raise ConfigError(f"optim.sequence_length={length} does not divide the {steps} steps per env of a "
                                  "rollout.")
            self.batch = rollout.reshape(-1, length)
        self.size = math.ceil(len(self.batch) / num_minibatches)

    def __iter__(self) -> Iterator[TensorDict]:
        for index in torch.randperm(len(self.batch), device=self.batch.device).split(self.size):
            yield self.batch[index]


def minibatch_sequence_length(cfg: DictConfig, actor, critic) -> int | None:
    """``optim.sequence_length`` for recurrent policies (checked against the rollout length), else None."""
    if not RecurrentStates(actor, critic):
        return None
    length = cfg.optim.sequence_length or 0
    steps = cfg.collector.frames_per_batch // cfg.env.num_envs
    if length < 0 or (length and not cfg.collector.group_size and steps % length):
        raise ConfigError(f"optim.sequence_length={length} must be 0 (whole rows) or divide the rollout's "
                          f"{steps} steps per env (collector.frames_per_batch / env.num_envs).")
    return length


class NonFiniteLoss(FloatingPointError):
    """A loss term or gradient became NaN or infinite: training stops before the optimiser step would spread it."""

    def __init__(self, fault: str, iteration: int, frames: int):
        super().__init__(f"non-finite {fault} at iteration {iteration} ({frames} frames). The last finite parameters "
                         f"are saved in {FINAL} (the last resumable state in {PERIODIC_DIR}/); try a lower optim.lr or "
                         "optim.max_grad_norm, or trainer.on_nan=skip to drop such updates.")


def non_finite_loss_terms(loss_td: TensorDict) -> str:
    terms = ", ".join(f"{key}={value.float().mean().item():.4g}" for key, value in loss_td.items()
                      if key.startswith("loss_"))
    return f"loss: {terms}"


def non_finite_gradients(module: torch.nn.Module) -> str:
    names = [name for name, p in module.named_parameters() if p.grad is not None and not p.grad.isfinite().all()]
    return f"gradient (loss terms finite) of: {', '.join(names)}"


class ReferencePolicy:
    """A frozen copy of the actor whose log-probs of the collected actions GRPO's KL term reads.

    Refreshed from the live actor every ``interval`` iterations (``loss.ref_update_interval``), or
    kept at the initial policy when that is None.
    """

    def __init__(self, actor, interval: int | None, log_prob_key: str):
        self.actor, self.interval, self.key = actor, interval, log_prob_key
        self.frozen = copy.deepcopy(actor).eval().requires_grad_(False)

    @classmethod
    def for_loss(cls, loss_module, actor) -> ReferencePolicy | None:
        """A reference for losses with a KL-to-reference term, else None."""
        if not getattr(loss_module, "kl_to_ref_coeff", None):
            return None
        return cls(actor, loss_module.ref_update_interval, loss_module.tensor_keys.ref_log_probs)

    @torch.no_grad()
    def write_log_prob(self, rollout: TensorDict, iteration: int) -> None:
        if self.interval and iteration > 1 and (iteration - 1) % self.interval == 0:
            self.frozen.load_state_dict(self.actor.state_dict())
        with set_recurrent_mode(True):  # a recurrent reference replays each row; the rollout stays unchanged
            dist = self.frozen.get_dist(rollout.select(*self.frozen.in_keys, strict=False))
        rollout[self.key] = dist.log_prob(rollout["action"])


def check_batch_sizes(cfg: DictConfig) -> None:
    """Fail early on batch settings the collector or minibatching cannot honour."""
    frames_per_batch, num_envs, group_size = cfg.collector.frames_per_batch, cfg.env.num_envs, cfg.collector.group_size
    if cfg.optim.num_minibatches < 1:
        raise ConfigError(f"optim.num_minibatches must be >= 1, got {cfg.optim.num_minibatches}.")
    if group_size:
        if group_size < 2 or num_envs % group_size:
            raise ConfigError(f"collector.group_size={group_size} must be >= 2 and divide env.num_envs={num_envs} "
                              "(each block of group_size envs is one group).")
        return
    if frames_per_batch % num_envs:
        raise ConfigError(f"collector.frames_per_batch={frames_per_batch} is not divisible by env.num_envs={num_envs}.")
    if frames_per_batch % cfg.optim.num_minibatches:
        raise ConfigError(f"collector.frames_per_batch={frames_per_batch} is not divisible by "
                          f"optim.num_minibatches={cfg.optim.num_minibatches}.")


def episode_metrics(collector) -> dict[str, float]:
    """Mean return and length of the training episodes that ended since the last call."""
    episodes = collector.finished_episodes()
    if not len(episodes.get("return", ())):
        return {}
    return {"train/episode_return": float(episodes["return"].mean()),
            "train/episode_length": float(episodes["length"].mean()),
            "train/episodes": len(episodes["return"]),
            "train/truncated_episodes": int(episodes["truncated"].sum())}


def prefixed(prefix: str, values: dict) -> dict[str, float]:
    return {f"{prefix}/{key}": float(torch.as_tensor(value).float().mean()) for key, value in values.items()}


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


@contextlib.contextmanager
def unchecked_distributions():
    """torch.distributions without argument validation: it re-checks every parameter tensor on each of the
    loss's distribution constructions (~15% of a CartPole minibatch's forward). The NaN checks stay."""
    validate = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        torch.distributions.Distribution.set_default_validate_args(validate)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
