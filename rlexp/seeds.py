"""Many seeds in one process: ``num_seeds=N`` trains seeds ``seed, seed+1, ..., seed+N-1`` as independent agents.

Each seed has its own envs (a block of ``env.num_envs`` sub-envs of one vector env, with statistics
and episode records of its own), evaluation envs, networks, adaptive loss coefficients (KLPEN's beta),
GRPO reference policy and optimiser state. The seeds' parameters are stacked on a leading seed
dimension and every network call runs once for all seeds under ``torch.func.vmap``: the losses and
value estimators are the ordinary classes, called per seed, so advantage normalisation, clip
fractions, KL terms and every logged scalar are per seed.

Why the update stays independent: the seeds share no parameter, so the gradient of the summed
per-seed losses with respect to seed k's slice is seed k's own gradient; Adam is elementwise, so one
Adam over the stacked tensors moves each slice as that seed's own Adam would. Gradient clipping
(each seed's global norm) and the NaN guard are per seed. A seed whose loss or gradient turns
non-finite stops alone (``trainer.on_nan=raise``; its parameters stay at their last finite values)
or skips that minibatch (``skip``); the run fails only when every seed has stopped.

``SeedsTrainer`` has ``Trainer``'s interface, so ``rlexp.trainer.train`` runs it unchanged; its
metrics hold one value per seed (an array), which ``SeedLoggers`` hands to each seed's own logger.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from functools import partial

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import InteractionType, TensorDictParams, set_interaction_type
from torch.func import vmap

from rlexp.checkpoint import rng_states, set_rng_states
from rlexp.collector import MASK, evaluate
from rlexp.envs import Step, build_env
from rlexp.loggers import Logger
from rlexp.modules.tensor_calls import module_calls
from rlexp.policies import RecurrentStates
from rlexp.registry import ConfigError, losses, policies, value_estimators
from rlexp.trainer import NonFiniteLoss, Progress, Trainer, episode_metrics, make_collector, prefixed

STOPPED = "train/stopped"  # per seed: 1 from the iteration a non-finite update stopped it


def stack_parameters(modules: Sequence[torch.nn.Module], buffers: Sequence[str] = ()) -> TensorDictParams:
    """The modules' parameters (and the named buffers) stacked on a new leading dim, as new leaves.

    The modules must share one architecture; ``buffers`` are state that differs per seed once
    training starts (the other buffers, constants such as loss coefficients, stay unbatched).
    """
    each = [TensorDict.from_module(module) for module in modules]
    keys = [key for key, value in each[0].items(True, True)
            if isinstance(value, torch.nn.Parameter) or (key if isinstance(key, str) else key[-1]) in buffers]
    stacked = TensorDict(batch_size=[len(modules)])
    for key in keys:
        value = torch.stack([td[key].detach() for td in each])
        stacked[key] = torch.nn.Parameter(value) if isinstance(each[0][key], torch.nn.Parameter) else value
    return TensorDictParams(stacked, no_convert=True)


def network_params(params: TensorDictBase, name: str) -> TensorDictBase:
    """The stacked parameters of a loss's network: stored as ``<name>_params`` by a functional loss, under
    the network's own name by one that holds it as a submodule (GRPO)."""
    return params[f"{name}_params"] if f"{name}_params" in params.keys() else params[name]


def by_key(per_seed: Sequence[Mapping[str, float]]) -> dict[str, np.ndarray]:
    """Metrics of each seed as one array per key (NaN for a seed without that key this iteration)."""
    keys = dict.fromkeys(key for metrics in per_seed for key in metrics)
    return {key: np.array([metrics.get(key, np.nan) for metrics in per_seed], dtype=np.float64) for key in keys}


class SeedsPolicy:
    """The seeds' actors as one collector policy, ``(step, deterministic=False) -> step``: a vector env's step
    ``[seeds * n, ...]`` is seen as ``[seeds, n, ...]``, each seed's block acted on by its own parameters in one
    vmapped call (through the tensor calls that reproduce the actor where it has them)."""

    def __init__(self, actor, params: TensorDictBase, num_seeds: int, device: torch.device):
        self.params, self.num_seeds, self.device = params, num_seeds, device
        self._act = vmap(partial(_act, actor, module_calls(actor, step=True)), (0, 0, None), randomness="different")

    def __call__(self, step: Step, deterministic: bool = False) -> Step:
        step = {key: value.reshape(self.num_seeds, -1, *value.shape[1:]).to(self.device) for key, value in step.items()}
        step = self._act(self.params, step, deterministic)
        return {key: value.reshape(-1, *value.shape[2:]) for key, value in step.items()}


class SeedsTrainer(Trainer):
    """``Trainer`` for ``num_seeds > 1`` feed-forward runs: the same steps, every part per seed (see the module)."""

    def __init__(self, cfg: DictConfig, device: torch.device, run: Mapping[str, str]):
        self.cfg, self.device, self.run = cfg, device, dict(run)
        self.seeds = [cfg.seed + k for k in range(cfg.num_seeds)]
        n = len(self.seeds)
        self.num_envs = cfg.env.num_envs  # per seed
        self.env = env = build_env(cfg.env, n * self.num_envs, groups=n)
        self.eval_env = build_env(cfg.env, n * cfg.eval.episodes, evaluation=True)  # frozen copies: grouped too
        loss_modules = []
        for seed in self.seeds:  # each seed's networks initialised from its own seed
            torch.manual_seed(seed)
            actor, critic = policies.build(cfg.policy, env.observation_space, env.action_space)
            critic = critic.to(device) if critic is not None else None
            loss_modules.append(losses.build(cfg.loss, actor.to(device), critic).to(device))
        # The first loss is the template every seed runs through: its networks read the stacked
        # parameters swapped in per call (the loss's own mechanism for parameters it does not own).
        self.loss_module = loss = loss_modules[0]
        self.actor, self.critic = loss.actor_network, getattr(loss, "critic_network", None)
        if RecurrentStates(self.actor, self.critic):
            raise ConfigError(f"num_seeds={cfg.num_seeds} with a recurrent policy (policy={cfg.policy.name}) is not "
                              "supported: run its seeds as a sweep (-m seed=0,1,2,...).")
        self.params = stack_parameters(loss_modules, buffers=loss.per_run_buffers)
        loss.make_value_estimator(value_estimators.build(cfg.value_estimator, value_network=self.critic))
        loss._swapped_modules.update(loss._functional_modules)
        self.actor.train(not loss.actor_in_eval_mode)
        self.parameters = [p for p in self.params.values(True, True) if isinstance(p, torch.nn.Parameter)]
        self.optimizer = torch.optim.Adam(self.parameters, lr=cfg.optim.lr, eps=cfg.optim.eps, foreach=True)
        self.policy = SeedsPolicy(self.actor, network_params(self.params, "actor_network"), n, device)
        # One seed for the whole vector env: its sub-envs, every seed's, draw apart. Grouped episodes (GRPO):
        # a seed's block of envs holds whole groups, as num_envs is a multiple of group_size.
        self.collector = make_collector(cfg, env, self.policy, self.policy, device, num_seeds=n)
        self.reference = SeedsReference(self.actor, network_params(self.params, "actor_network"), loss) \
            if getattr(loss, "kl_to_ref_coeff", None) else None
        self.frames = np.zeros(n, dtype=np.int64)  # each seed's own; they differ with grouped whole episodes
        self.stopped = np.zeros(len(self.seeds), dtype=bool)
        self.skipped_batches = np.zeros(len(self.seeds), dtype=np.int64)
        self.progress = Progress(next_eval=cfg.eval.interval, next_checkpoint=cfg.checkpoint.interval,
                                 eval_seed=cfg.seed + 1_000_003)
        self._loss = vmap(partial(_call_loss, loss), (0, 0), randomness="different")
        self._values = vmap(partial(_estimate, loss.value_estimator), (0, 0), randomness="different")

    # the iteration's steps (Trainer's anneal_learning_rate and close serve as they are) ------------------
    def collect(self) -> tuple[TensorDict, int]:
        """A rollout ``[num_seeds, num_envs, T]`` and its new frames per seed on average.

        Each seed counts its own frames (its W&B step, ``frames``); the schedules (learning rate,
        evaluations, checkpoints, the budget) follow their mean, which is every seed's count
        when the rollouts have a fixed length.
        """
        rollout = self.collector.collect().reshape(len(self.seeds), self.num_envs, -1)
        self.frames += rollout[MASK].flatten(1).sum(1).cpu().numpy() if MASK in rollout.keys(True) else \
            rollout[0].numel()
        new_frames = int(self.frames.mean()) - self.progress.frames
        self.progress.frames += new_frames
        if self.reference is not None:
            self.reference.write_log_prob(rollout, self.progress.iteration)
        return rollout, new_frames

    @torch.no_grad()
    def estimate_advantages(self, rollout: TensorDict) -> None:
        estimator = self.loss_module.value_estimator
        if self.critic is None:  # group-relative: seeds' groups are disjoint blocks of rows, so one call serves all
            rows = rollout.reshape(-1, rollout.shape[-1])
            estimator(rows)
            rollout.update(rows.select(estimator.tensor_keys.advantage).reshape(rollout.shape))
        else:
            rollout.update(self._values(network_params(self.params, "critic_network"), rollout))

    def update(self, rollout: TensorDict) -> dict[str, np.ndarray | float]:
        """``optim.ppo_epochs`` epochs; each seed's minibatches are its own shuffle of its own frames.

        Grouped episodes (GRPO) leave padding after each episode's end, and the seeds have different numbers
        of valid frames: each seed's shuffle puts its valid frames first, so its minibatches hold valid frames
        only, until they run out (a seed with fewer frames has partly padded last minibatches, which the loss
        ignores: the padding's stored log-prob is NaN, GRPO's mark of an invalid sample, and masked).
        """
        cfg, n = self.cfg, len(self.seeds)
        batch = rollout.exclude("next").reshape(n, -1)
        masked = MASK in batch.keys(True)
        if masked:
            log_prob_key = self.loss_module.tensor_keys.sample_log_prob
            batch[log_prob_key] = batch[log_prob_key].masked_fill(~batch[MASK], torch.nan)
        slots = int(batch[MASK].sum(1).max()) if masked else batch.shape[1]
        size = math.ceil(slots / cfg.optim.num_minibatches)
        # the rollout's tensors are on self.device, but the TensorDict holding them has no device of its own
        seeds = torch.arange(n, device=self.device)[:, None]
        sums: dict[str, torch.Tensor] = {}
        updates = torch.zeros(n, device=self.device)
        for _epoch in range(cfg.optim.ppo_epochs):
            order = torch.rand(batch.shape, device=self.device)
            if masked:
                order = order - 2 * batch[MASK]  # valid frames sort first
            order = order.argsort(1)[:, :slots]
            for index in order.split(size, dim=1):
                loss_td = self._loss(self.params, batch[seeds, index])
                loss = sum(value for key, value in loss_td.items() if key.startswith("loss_"))
                self.optimizer.zero_grad()
                loss.sum().backward()
                grad_norm = self._clip_gradients()
                ok = torch.isfinite(loss) & torch.isfinite(grad_norm)
                self._step(ok & torch.as_tensor(~self.stopped, device=ok.device))
                self._record_faults(ok, loss_td)
                ok &= torch.as_tensor(~self.stopped, device=ok.device)
                with torch.no_grad():
                    for key, value in [*loss_td.items(), ("train/grad_norm", grad_norm)]:
                        value = value.float().reshape(n, -1).mean(1)
                        sums[key] = sums.get(key, 0) + torch.where(ok, value, 0.0)
                    updates += ok
        with torch.no_grad():
            means = {key: (value / updates).cpu().numpy() for key, value in sums.items()}  # NaN: no update
        if cfg.trainer.on_nan == "skip":
            means["train/skipped_batches"] = self.skipped_batches.copy()
        means[STOPPED] = self.stopped.astype(np.float64)
        return means

    def _clip_gradients(self) -> torch.Tensor:
        """Each seed's global gradient norm, and its gradients scaled to ``optim.max_grad_norm`` as
        ``clip_grad_norm_`` scales one run's."""
        grads = [p.grad for p in self.parameters]
        norm = torch.stack([g.reshape(len(g), -1).square().sum(1) for g in grads]).sum(0).sqrt()
        scale = (self.cfg.optim.max_grad_norm / (norm + 1e-6)).clamp(max=1.0)
        for g in grads:
            g.mul_(scale.reshape(-1, *[1] * (g.ndim - 1)))
        return norm

    def _step(self, ok: torch.Tensor) -> None:
        """The optimiser step for the seeds in ``ok``; the others keep their parameters and Adam moments."""
        if bool(ok.all()):
            self.optimizer.step()
            return
        kept = [(p, p.detach().clone(), {k: v.clone() for k, v in self.optimizer.state[p].items() if v.ndim})
                for p in self.parameters]
        for p in self.parameters:
            p.grad[~ok] = 0.0  # keeps NaN out of the step's foreach kernels
        self.optimizer.step()
        with torch.no_grad():
            for p, value, moments in kept:
                p[~ok] = value[~ok]
                for name, moment in moments.items():
                    self.optimizer.state[p][name][~ok] = moment[~ok]

    def _record_faults(self, ok: torch.Tensor, loss_td: TensorDictBase) -> None:
        bad = ~ok.cpu().numpy() & ~self.stopped
        if not bad.any():
            return
        if self.cfg.trainer.on_nan == "skip":
            self.skipped_batches += bad
            return
        for k in np.flatnonzero(bad):
            terms = ", ".join(f"{key}={float(value[k].detach()):.4g}" for key, value in loss_td.items()
                              if key.startswith("loss_"))
            print(f"rlexp: seed {self.seeds[k]} stopped: non-finite loss or gradient at iteration "
                  f"{self.progress.iteration} ({self.progress.frames} frames; {terms}); its parameters stay at "
                  "their last finite values, the other seeds go on.", file=sys.stderr)
        self.stopped |= bad
        if self.stopped.all():
            raise NonFiniteLoss("loss or gradient in every seed", self.progress.iteration, self.progress.frames)

    def episode_metrics(self) -> dict[str, np.ndarray]:
        episodes = self.collector.finished_episodes()
        seed_of = episodes["env"] // self.num_envs
        return by_key([episode_metrics({key: value[seed_of == k] for key, value in episodes.items()})
                       for k in range(len(self.seeds))])

    def rollout_statistics(self, rollout: TensorDict) -> dict[str, np.ndarray]:
        """Each seed's value-estimator diagnostics (GRPO's group statistics), and its frames when they differ."""
        statistics = getattr(self.loss_module.value_estimator, "group_statistics", None)
        out = by_key([prefixed("train", statistics(rollout[k])) for k in range(len(self.seeds))]) if statistics else {}
        return out | ({"frames": self.frames.astype(np.float64)} if MASK in rollout.keys(True) else {})

    @torch.no_grad()
    def evaluate(self) -> tuple[dict[str, np.ndarray], None]:
        """One deterministic episode per evaluation env and seed, on the seed's frozen training statistics."""
        progress, n = self.progress, len(self.seeds)
        self.eval_env.freeze_statistics(self.env.normalizer)
        results = evaluate(self.eval_env, self.policy, self.device, seed=progress.eval_seed)
        progress.eval_metrics = {f"eval/{key}": value.reshape(n, -1).double().mean(1).numpy()
                                 for key, value in results.items()}
        progress.eval_seed, progress.next_eval = None, progress.next_eval + self.cfg.eval.interval
        return progress.eval_metrics, None

    # checkpoints ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"config": OmegaConf.to_container(self.cfg, resolve=True), "run": self.run, "resumable": True,
                "frames": self.progress.frames, "iteration": self.progress.iteration,
                "progress": asdict(self.progress), "seeds": self.seeds, "seed_frames": self.frames.copy(),
                "actors": [self.actor_state(k) for k in range(len(self.seeds))],
                "params": self.params.state_dict(),
                "reference": self.reference.frozen.state_dict() if self.reference is not None else None,
                "optimizer": self.optimizer.state_dict(), "stopped": self.stopped.copy(),
                "skipped_batches": self.skipped_batches.copy(),
                "collector": self.collector.state_dict(), "eval_env": self.eval_env.state_dict(), "rng": rng_states()}

    def actor_state(self, k: int) -> dict[str, torch.Tensor]:
        """Seed ``k``'s actor as an ordinary ``state_dict`` (what ``rlexp.evaluate`` loads)."""
        with network_params(self.params, "actor_network")[k].to_module(self.actor):
            return {name: value.detach().clone() for name, value in self.actor.state_dict().items()}

    def load_state_dict(self, state: Mapping) -> None:
        if list(state["seeds"]) != self.seeds:
            raise ConfigError(f"the checkpoint holds seeds {state['seeds']}, the config asks for {self.seeds}.")
        self.progress = Progress(**state["progress"])
        self.params.load_state_dict(state["params"])
        self.frames = state["seed_frames"].copy()
        if self.reference is not None:
            self.reference.frozen.load_state_dict(state["reference"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stopped, self.skipped_batches = state["stopped"].copy(), state["skipped_batches"].copy()
        self.collector.load_state_dict(state["collector"], seed=self.cfg.seed + self.progress.iteration)
        self.eval_env.load_state_dict(state["eval_env"])
        set_rng_states(state["rng"])



def _act(actor, calls, params: TensorDictBase, step: Step, deterministic: bool) -> Step:
    """One seed's actor call on one env step (vmapped over seeds): through the tensor calls that reproduce the
    actor (``rlexp.modules.tensor_calls``) where it has them, else as a tensordict module."""
    with params.to_module(actor):
        if calls is not None:
            step = dict(step)
            for call in calls:
                call(step, deterministic)
            return step
        td = TensorDict(dict(step), batch_size=step["observation"].shape[:1])
        with set_interaction_type(InteractionType.DETERMINISTIC if deterministic else InteractionType.RANDOM):
            td = actor(td)
        return dict(td.items(include_nested=True, leaves_only=True))


def _call_loss(loss, params: TensorDictBase, minibatch: TensorDictBase) -> TensorDictBase:
    """One seed's loss on its minibatch (vmapped over seeds)."""
    with params.to_module(loss):
        return loss(minibatch)


def _estimate(estimator, critic_params: TensorDictBase, rollout: TensorDictBase) -> TensorDictBase:
    """One seed's advantages and value targets (vmapped over seeds)."""
    keys = estimator.tensor_keys
    return estimator(rollout.copy(), params=critic_params).select(keys.advantage, keys.value_target, keys.value)


class SeedsReference:
    """GRPO's reference policy per seed: a frozen copy of the stacked actor parameters, refreshed every
    ``ref_update_interval`` iterations (or kept at the initial policy), whose log-probs of the collected
    actions the KL-to-reference term reads."""

    def __init__(self, actor, params: TensorDictBase, loss):
        self.params, self.interval, self.key = params, loss.ref_update_interval, loss.tensor_keys.ref_log_probs
        self.frozen = params.data.clone()
        self._log_prob = vmap(partial(_log_prob, actor), (0, 0), randomness="different")

    @torch.no_grad()
    def write_log_prob(self, rollout: TensorDict, iteration: int) -> None:
        if self.interval and iteration > 1 and (iteration - 1) % self.interval == 0:
            self.frozen.update_(self.params.data)
        rollout[self.key] = self._log_prob(self.frozen, rollout)


def _log_prob(actor, params: TensorDictBase, rollout: TensorDictBase) -> torch.Tensor:
    """One seed's log-probs of its rollout's actions under ``params`` (vmapped over seeds)."""
    with params.to_module(actor):
        return actor.get_dist(rollout.select(*actor.in_keys, strict=False)).log_prob(rollout["action"])


class SeedLoggers(Logger):
    """One logger per seed: a metric that holds one value per seed goes to each seed's logger, a NaN
    (no episode ended, no update taken) is left out, ``frames`` (if given) is each seed's step, and a
    seed's logger is finished (exit code 3) from the iteration that stopped it."""

    name = "seed loggers"

    def __init__(self, loggers: Sequence[Logger]):
        self.loggers = list(loggers)
        self.open = [True] * len(self.loggers)

    def log(self, metrics: Mapping[str, float | np.ndarray], step: int) -> None:
        for k, logger in enumerate(self.loggers):
            if not self.open[k]:
                continue
            own = {key: float(value[k]) if isinstance(value, np.ndarray) else value for key, value in metrics.items()}
            own_step = int(own.pop("frames", step))  # a seed's own frame count, where the seeds' counts differ
            logger.log({key: value for key, value in own.items() if not (isinstance(value, float)
                                                                          and math.isnan(value))}, own_step)
            if own.get(STOPPED):
                logger.finish(3)
                self.open[k] = False

    def finish(self, exit_code: int = 0) -> None:
        errors = []
        for k, logger in enumerate(self.loggers):
            if self.open[k]:
                self.open[k] = False
                try:
                    logger.finish(exit_code)
                except Exception as err:  # noqa: BLE001  (finish the others; report the first)
                    errors.append(err)
        if errors:
            raise errors[0]

    def abandon(self) -> None:
        for logger in self.loggers:
            logger.abandon()
