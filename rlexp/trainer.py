"""The training loop: collect -> replay transform -> advantages -> epochs over minibatches -> log.

``train`` is the loop, top to bottom; ``Trainer`` holds the parts it builds from the config and the
steps of an iteration (SB3's split of collection from the update). Every piece comes from a
registry selected by the config (env, policy, loss, value estimator, replay transform), so the loop
is the whole algorithm for every combination: PPO-family losses on fixed-length rollouts, GRPO on
grouped whole episodes (``collector.group_size``). Each iteration logs the wall time of its phases
(``train/time_collect``, ``_advantage``, ``_update``, ``_eval``, ``_checkpoint``).
"""

from __future__ import annotations

import contextlib
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

from rlexp.checkpoint import FINAL, PERIODIC_DIR, PeriodicCheckpoints, rng_states, save_checkpoint, set_rng_states
from rlexp.collector import MASK, Collector, EpisodeCollector, evaluate
from rlexp.envs import EnvFault, build_env
from rlexp.loggers import Logger
from rlexp.modules import set_recurrent_mode
from rlexp.data import n_step_rollout
from rlexp.objectives import ReferencePolicy
from rlexp.policies import RecurrentStates, rollout_policy
from rlexp.registry import ConfigError, losses, policies, replay_transforms, value_estimators
from rlexp.signals import Interrupted, StopRequest
from rlexp.validation import check_sequence_length, validate_config
from rlexp.video import VIDEO_DIR, VIDEO_KEY, VideoRecorder, render_options


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
    seed_everything(cfg.seed)
    torch.set_num_threads(cfg.threads)
    if cfg.num_seeds == 1:
        trainer = Trainer(cfg, device, run, video_dir=run_dir / VIDEO_DIR)
    else:
        from rlexp.seeds import SeedsTrainer  # noqa: PLC0415  (imports torch.func; one seed does not need it)

        trainer = SeedsTrainer(cfg, device, run)
    if resume is not None:
        trainer.load_state_dict(resume)
    progress, total_frames = trainer.progress, cfg.collector.total_frames
    periodic = PeriodicCheckpoints(run_dir, cfg.checkpoint.keep, resumed_from=resume["frames"] if resume else None)

    with make_logger() as logger, tqdm(initial=progress.frames, total=total_frames, unit="frame", unit_scale=True,
                                        dynamic_ncols=True, mininterval=1.0) as bar, unchecked_distributions():
        while progress.frames < total_frames:
            clock = PhaseClock()
            progress.iteration += 1
            lr = trainer.anneal_learning_rate()
            try:
                with clock("collect"):
                    rollout, new_frames = trainer.collect()
                with clock("advantage"):
                    trainer.estimate_advantages(rollout)
                with clock("update"):
                    losses = trainer.update(rollout)
            except (EnvFault, NonFiniteLoss) as fault:  # no step was taken with it: the parameters are finite
                save_checkpoint({**trainer.state_dict(), "resumable": False}, run_dir / FINAL)
                if isinstance(fault, EnvFault):
                    raise EnvFault(f"{fault} The parameters are saved in {FINAL} (the last resumable state in "
                                   f"{PERIODIC_DIR}/).") from None
                raise
            progress.train_seconds += clock.total
            metrics = {"train/lr": lr, "train/fps": new_frames / clock.total, "train/iteration": progress.iteration,
                       "train/seconds": progress.train_seconds} | trainer.episode_metrics() | losses
            metrics |= trainer.rollout_statistics(rollout)
            if progress.frames >= progress.next_eval or progress.frames >= total_frames:
                with clock("eval"):
                    evaluation, video = trainer.evaluate()
                metrics |= evaluation
                if video is not None:
                    logger.log_video(VIDEO_KEY, video, step=progress.frames)
            if progress.frames >= progress.next_checkpoint:
                with clock("checkpoint"):
                    periodic.save(trainer.state_dict(), progress.frames)
                progress.next_checkpoint += cfg.checkpoint.interval
            metrics |= clock.metrics()
            logger.log(metrics, step=progress.frames)
            bar.update(new_frames)
            bar.set_postfix(fps=f"{metrics['train/fps']:,.0f}", ret=f"{shown(metrics, 'train/episode_return'):.1f}",
                            eval=f"{shown(progress.eval_metrics, 'eval/episode_return'):.1f}")
            if stop and progress.frames < total_frames:  # SIGINT/SIGTERM: at an iteration's end, resumable exactly
                path = periodic.save(trainer.state_dict(), progress.frames)
                raise Interrupted(stop.signum, f" at {progress.frames:,} frames; checkpoint {path}")

        save_checkpoint(trainer.state_dict(), run_dir / FINAL)
    trainer.close()
    return {"frames": progress.frames, "train/seconds": progress.train_seconds, **progress.eval_metrics}


class Trainer:
    """The run's parts, built from the config, and the steps of one iteration: collect, estimate
    advantages, update, evaluate. ``state_dict``/``load_state_dict`` hold everything a checkpoint needs
    to continue the run bit for bit.

    The build order is part of the numbers: each builder draws from the seeded global RNGs.
    """

    def __init__(self, cfg: DictConfig, device: torch.device, run: Mapping[str, str], video_dir: Path):
        self.cfg, self.device, self.run = cfg, device, dict(run)
        self.env = build_env(cfg.env)
        video_options = render_options(cfg.env) if cfg.eval.video else {}  # render_mode for evaluation videos
        self.eval_env = build_env({**cfg.env, **video_options}, cfg.eval.episodes, evaluation=True)
        self.video = VideoRecorder(self.eval_env, cfg.env, video_dir, cfg.eval.video_every) if cfg.eval.video \
            else None
        actor, critic = policies.build(cfg.policy, self.env.observation_space, self.env.action_space)
        self.actor, self.critic = actor.to(device), critic.to(device) if critic is not None else None
        self.replay_transform = replay_transforms.build(cfg.replay_transform)
        self.loss_module = losses.build(cfg.loss, self.actor, self.critic).to(device)
        self.loss_module.make_value_estimator(value_estimators.build(cfg.value_estimator, value_network=self.critic))
        self.reference = ReferencePolicy.for_loss(self.loss_module, self.actor)
        self.sequence_length = check_sequence_length(cfg, bool(RecurrentStates(self.actor, self.critic)))
        self.parameters = list(self.loss_module.parameters())
        # foreach: the for-loop Adam's numbers, bit for bit, at less cost; fused=True is faster still on the CPU
        # but rounds differently. optim.compile: the loss (with its backward), the gradient clipping and the Adam
        # step run compiled, the NaN guard between them eager; the lr is a tensor, annealed in place, so that a
        # new lr is a new value and not a new constant of the compiled step (which would recompile it every
        # iteration). Adam accepts a tensor lr only in its for-loop form, which torch.compile fuses anyway.
        compiled = cfg.optim.compile
        if compiled and self.loss_module.per_run_buffers:
            raise ConfigError(f"optim.compile=true with loss={cfg.loss.name}: its forward updates "
                              f"{', '.join(self.loss_module.per_run_buffers)} in place, which torch.compile cannot "
                              "trace. Use optim.compile=false with this loss.")
        self.optimizer = torch.optim.Adam(self.parameters, eps=cfg.optim.eps, foreach=not compiled,
                                          lr=torch.tensor(cfg.optim.lr, device=device) if compiled else cfg.optim.lr)
        steps = (self._loss_and_terms, self._clip_gradients, self.optimizer.step)
        self.loss_and_terms, self.clip_gradients, self.optimizer_step = \
            (torch.compile(step) for step in steps) if compiled else steps
        self.collector = make_collector(cfg, self.env, self.actor, rollout_policy(self.actor, self.critic), device)
        self.actor.train(not self.loss_module.actor_in_eval_mode)
        # the first evaluation's env seed; later ones continue the eval env's RNG
        self.progress = Progress(next_eval=cfg.eval.interval, next_checkpoint=cfg.checkpoint.interval,
                                 eval_seed=cfg.seed + 1_000_003)

    def anneal_learning_rate(self) -> float:
        """Linear decay to 0 over ``collector.total_frames`` (or constant); returns this iteration's lr."""
        optim, total = self.cfg.optim, self.cfg.collector.total_frames
        lr = optim.lr * (1.0 - self.progress.frames / total if optim.anneal_lr else 1.0)
        for group in self.optimizer.param_groups:
            if isinstance(group["lr"], torch.Tensor):  # optim.compile
                group["lr"].fill_(lr)
            else:
                group["lr"] = lr
        return lr

    def collect(self) -> tuple[TensorDict, int]:
        """A rollout ``[num_envs, T]`` and its number of new frames.

        With the multi-step transform the rollout's frames are the windows that closed in this call:
        the first call's ``T`` is ``n_steps`` shorter (validation keeps ``n_steps`` below ``T``).
        """
        rollout = self.collector.collect()
        new_frames = int(rollout[MASK].sum()) if MASK in rollout.keys(True) else rollout.numel()
        self.progress.frames += new_frames
        if self.reference is not None:
            self.reference.write_log_prob(rollout, self.progress.iteration)
        if self.replay_transform is not None:
            rollout = n_step_rollout(self.replay_transform, rollout)
        return rollout, new_frames

    @torch.no_grad()
    def estimate_advantages(self, rollout: TensorDict) -> None:
        """Write ``advantage`` (and ``value_target``, ``state_value``) into ``rollout``."""
        with set_recurrent_mode(True):  # a recurrent critic runs over whole rows
            self.loss_module.value_estimator(rollout)

    def update(self, rollout: TensorDict) -> dict[str, float]:
        """``optim.ppo_epochs`` epochs over the rollout's minibatches; the loss outputs averaged by key.

        A non-finite loss or gradient raises ``NonFiniteLoss`` before the step would spread it, or
        (``trainer.on_nan=skip``) drops that minibatch's update, counted in ``train/skipped_batches``.
        """
        outputs: dict[str, list[torch.Tensor]] = {}
        minibatches = Minibatches(rollout, self.cfg.optim.num_minibatches, self.sequence_length)
        for _epoch in range(self.cfg.optim.ppo_epochs):
            for minibatch in minibatches:
                loss, loss_td = self.loss_and_terms(minibatch)
                self.optimizer.zero_grad()
                fault = non_finite_loss_terms(loss_td) if not torch.isfinite(loss) else None
                if fault is None:
                    loss.backward()
                    grad_norm = self.clip_gradients()
                    fault = non_finite_gradients(self.loss_module) if not torch.isfinite(grad_norm) else None
                if fault is not None:
                    if self.cfg.trainer.on_nan == "skip":
                        self.progress.skipped_batches += 1
                        continue
                    raise NonFiniteLoss(fault, self.progress.iteration, self.progress.frames)
                self.optimizer_step()
                with torch.no_grad():
                    for key, value in [*loss_td.items(), ("train/grad_norm", grad_norm)]:
                        outputs.setdefault(key, []).append(value.float() if value.ndim == 0 else value.float().mean())
        with torch.no_grad():
            means = {key: torch.stack(values).mean().item() for key, values in outputs.items()}
        if self.cfg.trainer.on_nan == "skip":
            means["train/skipped_batches"] = self.progress.skipped_batches
        return means

    def _loss_and_terms(self, minibatch: TensorDict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The minibatch's objective (the sum of the ``loss_*`` terms) and every output of the loss module."""
        terms = dict(self.loss_module(minibatch).items())
        return sum(value for key, value in terms.items() if key.startswith("loss_")), terms

    def _clip_gradients(self) -> torch.Tensor:
        """Scale the gradients to a global norm of at most ``optim.max_grad_norm``; return the norm before."""
        return torch.nn.utils.clip_grad_norm_(self.parameters, self.cfg.optim.max_grad_norm, foreach=True)

    def episode_metrics(self) -> dict[str, float]:
        return episode_metrics(self.collector.finished_episodes())

    def rollout_statistics(self, rollout: TensorDict) -> dict[str, float]:
        """The value estimator's per-iteration diagnostics, if it has any (GRPO's group statistics)."""
        statistics = getattr(self.loss_module.value_estimator, "group_statistics", None)
        return prefixed("train", statistics(rollout)) if statistics is not None else {}

    def evaluate(self) -> tuple[dict[str, float], Path | None]:
        """Deterministic episodes on the evaluation envs, with the training statistics frozen as they are now;
        the metrics and the video recorded of the first episode, if this evaluation records one."""
        progress = self.progress
        self.eval_env.freeze_statistics(self.env.normalizer)
        recording = self.video and self.video.recording(progress.next_eval // self.cfg.eval.interval,
                                                        progress.frames,
                                                        final=progress.frames >= self.cfg.collector.total_frames)
        returns = evaluate(recording or self.eval_env, self.actor, self.device, seed=progress.eval_seed)
        progress.eval_metrics = prefixed("eval", returns)
        progress.eval_seed, progress.next_eval = None, progress.next_eval + self.cfg.eval.interval
        return progress.eval_metrics, recording.path if recording else None

    def state_dict(self) -> dict:
        """Everything that decides the rest of the run, with the config and the logger's run identity."""
        return {"config": OmegaConf.to_container(self.cfg, resolve=True), "run": self.run, "resumable": True,
                "frames": self.progress.frames, "iteration": self.progress.iteration,
                "progress": asdict(self.progress), "actor": self.actor.state_dict(),
                "critic": self.critic.state_dict() if self.critic is not None else None,
                "loss": self.loss_module.state_dict(), "optimizer": self.optimizer.state_dict(),
                "reference": self.reference.frozen.state_dict() if self.reference is not None else None,
                "replay_transform": self.replay_transform.state_dict() if self.replay_transform is not None else None,
                "collector": self.collector.state_dict(), "eval_env": self.eval_env.state_dict(),
                "rng": rng_states()}

    def load_state_dict(self, state: Mapping) -> None:
        """Continue from ``state_dict()``'s output (``actor``/``critic`` are inside the loss's parameters)."""
        self.progress = Progress(**state["progress"])
        self.loss_module.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.reference is not None:
            self.reference.frozen.load_state_dict(state["reference"])
        if self.replay_transform is not None:
            self.replay_transform.load_state_dict(state["replay_transform"])
        self.collector.load_state_dict(state["collector"], seed=self.cfg.seed + self.progress.iteration)
        self.eval_env.load_state_dict(state["eval_env"])
        set_rng_states(state["rng"])

    def close(self) -> None:
        self.env.close()
        self.eval_env.close()


def make_collector(cfg: DictConfig, env, actor, policy, device: torch.device, num_seeds: int = 1):
    """Grouped whole episodes of ``actor`` (``collector.group_size``, GRPO), else fixed-length rollouts of
    ``policy`` (the actor, plus the critic's GRUs if it has any): ``frames_per_batch`` per seed."""
    if not cfg.collector.group_size:
        return Collector(env, policy, num_seeds * cfg.collector.frames_per_batch, device, seed=cfg.seed)
    if env.max_episode_steps is None:
        raise ConfigError(f"env {env.name} has no time limit, and grouped episode collection (collector.group_size, "
                          "used by loss=grpo) runs every episode to its end: set env.max_episode_steps.")
    return EpisodeCollector(env, actor, cfg.collector.group_size, device, seed=cfg.seed)


class PhaseClock:
    """Wall time of an iteration's phases: ``train/time_<phase>`` in seconds; ``total`` is the training part
    (collection, advantages and update), the time ``train/fps`` and ``train/seconds`` count."""

    TRAINING = ("collect", "advantage", "update")

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

    @property
    def total(self) -> float:
        return sum(self.seconds.get(phase, 0.0) for phase in self.TRAINING)

    def metrics(self) -> dict[str, float]:
        return {f"train/time_{phase}": seconds for phase, seconds in self.seconds.items()}


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
            length = rollout.shape[-1] if masked or not sequence_length else sequence_length
            self.batch = rollout.reshape(-1, length)
        self.size = math.ceil(len(self.batch) / num_minibatches)

    def __iter__(self) -> Iterator[TensorDict]:
        for index in torch.randperm(len(self.batch), device=self.batch.device).split(self.size):
            yield self.batch[index]


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


def episode_metrics(episodes: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Mean return and length of finished training episodes (a collector's ``finished_episodes()``)."""
    if not len(episodes.get("return", ())):
        return {}
    return {"train/episode_return": float(episodes["return"].mean()),
            "train/episode_length": float(episodes["length"].mean()),
            "train/episodes": len(episodes["return"]),
            "train/truncated_episodes": int(episodes["truncated"].sum())}


def shown(metrics: Mapping[str, float | np.ndarray], key: str) -> float:
    """``metrics[key]`` for the progress bar: the mean over the seeds that have it when there are several."""
    values = np.asarray(metrics.get(key, np.nan), dtype=np.float64)
    return float(values[~np.isnan(values)].mean()) if not np.isnan(values).all() else math.nan


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
