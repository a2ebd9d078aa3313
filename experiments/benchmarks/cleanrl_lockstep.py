"""One PPO iteration of CleanRL's ``ppo_continuous_action.py`` replayed through ``+experiment=cleanrl_mujoco``.

Seed-to-seed spread on MuJoCo is hundreds of return points, so comparing final returns cannot show
whether the preset's update is CleanRL's. This does it number by number on one iteration:

1. ``capture`` (run by CleanRL's own Python, e.g. the peers venv): runs CleanRL's script *unchanged*
   for one 2048-step iteration (``runpy``), with a global optimizer-step hook that reads the script's
   variables at every Adam step: the initial parameters, the rollout (normalised observations, actions,
   log-probs, rewards, dones, values), its GAE advantages and returns, each minibatch's indices and
   losses, and the clipped gradients of the first step; then the parameters after the iteration.
   It also records the raw stream below CleanRL's normalising wrappers (what its ``ClipAction`` wrapper
   returns).
2. ``compare`` (rlexp's Python): builds the preset's ``Trainer`` on the same env, loads CleanRL's initial
   parameters, writes CleanRL's rollout into an rlexp rollout (its dones as terminations, as CleanRL
   treats them), runs rlexp's own advantage estimation and update with CleanRL's minibatch order, and
   prints the largest differences: advantages, returns, the first step's gradients, every minibatch's
   policy and value loss, and the parameters after 320 Adam steps. The raw stream goes through rlexp's
   normaliser and through the formulas of gymnasium 0.29's wrappers, each compared with what CleanRL's
   policy saw.

Float32 rounding differs between the two programs (operation order), so the parameters after 320
steps differ by rounding noise, not 0; a term computed differently shows up as a loss difference of
orders of magnitude more, from the first minibatch on.

Run: ``.venv/bin/python experiments/benchmarks/cleanrl_lockstep.py --cleanrl-script ppo_continuous_action.py
--cleanrl-python <peers venv>/bin/python [--env-ids Walker2d-v4 Hopper-v4 ...] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ENVS = {"HalfCheetah": "halfcheetah", "Hopper": "hopper", "Walker2d": "walker2d",
        "InvertedPendulum": "inverted_pendulum"}


def capture(script: Path, env_id: str, seed: int, out: Path) -> None:
    """Run CleanRL's script for one iteration and save what its update saw (runs in CleanRL's env)."""
    import runpy

    import torch
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    saved: dict = {"minibatches": [], "pg_loss": [], "v_loss": []}

    def script_globals() -> dict:
        frame = sys._getframe(1)
        while "mb_inds" not in frame.f_globals:
            frame = frame.f_back
        return frame.f_globals

    def before_step(optimizer, args, kwargs):
        names = script_globals()
        if not saved["minibatches"]:  # the first step: nothing has moved yet
            agent = names["agent"]
            saved["initial"] = {k: v.detach().clone() for k, v in agent.state_dict().items()}
            saved["first_grads"] = {k: p.grad.detach().clone() for k, p in agent.named_parameters()}
            for key in ("obs", "actions", "logprobs", "rewards", "dones", "values", "next_obs", "next_done",
                        "advantages", "returns"):
                saved[key] = names[key].detach().clone()
        saved["minibatches"].append(torch.as_tensor(names["mb_inds"].copy()))
        for key in ("pg_loss", "v_loss"):
            saved[key].append(names[key].item())

    register_optimizer_step_pre_hook(before_step)
    record_raw_env(saved.setdefault("raw", []))
    sys.argv = [str(script), f"--env-id={env_id}", f"--seed={seed}", "--num-steps=2048", "--total-timesteps=2048"]
    names = runpy.run_path(str(script), run_name="__main__")
    saved["final"] = {k: v.detach().clone() for k, v in names["agent"].state_dict().items()}
    torch.save(saved, out)


def record_raw_env(events: list) -> None:
    """Record what CleanRL's normalising wrappers receive: the outputs of the ``ClipAction`` wrapper below them."""
    import gymnasium as gym
    import torch

    step, reset = gym.wrappers.ClipAction.step, gym.wrappers.ClipAction.reset

    def recorded_step(self, action):
        obs, reward, terminated, truncated, info = out = step(self, action)
        events.append((torch.tensor(obs), float(reward), bool(terminated), bool(truncated)))
        return out

    def recorded_reset(self, **kwargs):
        out = reset(self, **kwargs)
        events.append((torch.tensor(out[0]), None, None, None))
        return out

    gym.wrappers.ClipAction.step, gym.wrappers.ClipAction.reset = recorded_step, recorded_reset


def normalised(events: list, gamma: float) -> dict[str, tuple]:
    """The raw stream's normalised observations (the policy's inputs) and rewards, two ways.

    ``rlexp``: through rlexp's ``Normalizer`` as the preset configures it, stepped as rlexp's vector env
    steps it (a finished episode's final observation normalised beside the next one's first, the return
    restarted after it). ``gymnasium 0.29``: the formulas of the wrappers CleanRL's env used: every
    observation the wrapper passes, the final ones included, enters the statistics, and the return is
    ``R = gamma * R * (1 - terminated) + r`` (restarted *at* a termination, never at a truncation).
    """
    import numpy as np

    from rlexp.envs import NormalizeConfig, Normalizer, RunningMeanStd

    events = [(obs.numpy(), *rest) for obs, *rest in events]
    normalizer = Normalizer(NormalizeConfig(observation=True, reward=True, gamma=gamma), events[0][0].shape, 1)
    obs_rms, return_rms, discounted = RunningMeanStd(events[0][0].shape), RunningMeanStd(()), 0.0

    def as_029(obs: np.ndarray) -> np.ndarray:
        return np.clip((obs - obs_rms.mean) / np.sqrt(obs_rms.var + 1e-8), -10, 10)

    obs_rms.update(events[0][0][None])
    rlexp, gym029 = ([normalizer.observations(events[0][0][None])[0][0]], []), ([as_029(events[0][0])], [])
    index = 1
    while index < len(events):
        obs, reward, terminated, truncated = events[index]
        done = terminated or truncated
        root = events[index + 1][0] if done else obs  # after an episode's end: the reset's observation
        rlexp[0].append(normalizer.observations(root[None], obs[None])[0][0])
        rlexp[1].append(normalizer.rewards(np.array([reward]), np.array([done]))[0])
        for seen in (obs, root) if done else (obs,):
            obs_rms.update(seen[None])
        discounted = discounted * gamma * (1 - terminated) + reward
        return_rms.update(np.array([discounted]))
        gym029[0].append(as_029(root))
        gym029[1].append(np.clip(reward / np.sqrt(return_rms.var + 1e-8), -10, 10))
        index += 2 if done else 1
    return {"rlexp": (np.stack(rlexp[0]), np.array(rlexp[1])), "gymnasium 0.29": (np.stack(gym029[0]),
                                                                                  np.array(gym029[1]))}


def compare(saved_path: Path, env_id: str, seed: int) -> dict[str, float]:
    """Replay the captured iteration through the preset's trainer; the largest absolute differences."""
    import torch

    from rlexp.config import compose_config
    from rlexp.trainer import Trainer, seed_everything

    saved = torch.load(saved_path)
    cfg = compose_config("+experiment=cleanrl_mujoco", f"env={ENVS[env_id.rsplit('-', 1)[0]]}", f"env.id={env_id}", f"seed={seed}",
                         "logger=none")
    seed_everything(seed)
    trainer = Trainer(cfg, torch.device("cpu"), {}, video_dir=Path(tempfile.mkdtemp()))
    rlexp_params = rlexp_parameters(trainer)
    with torch.no_grad():
        for name, value in saved["initial"].items():
            rlexp_params[name].copy_(value.reshape(rlexp_params[name].shape))

    rollout, _ = trainer.collect()  # rlexp's own layout, then CleanRL's numbers written into it
    steps = saved["obs"].shape[0]
    done_after = torch.cat([saved["dones"][1:, 0], saved["next_done"][:1]]).bool()  # step t ends an episode
    next_obs = torch.cat([saved["obs"][1:, 0], saved["next_obs"]])  # masked where an episode ended
    with torch.no_grad():
        rollout["observation"] = saved["obs"][:, 0][None]
        trainer.actor.module[0](rollout)  # loc and scale under the initial parameters, as collection stores them
        rollout["action"] = saved["actions"][:, 0][None]
        rollout["action_log_prob"] = saved["logprobs"][:, 0][None]
        rollout["is_init"] = saved["dones"][:, 0].bool()[None, :, None]
        rollout["next", "observation"] = next_obs[None]
        rollout["next", "reward"] = saved["rewards"][:, 0][None, :, None]
        for key in ("done", "terminated"):
            rollout["next", key] = done_after[None, :, None]
        rollout["next", "truncated"] = torch.zeros_like(done_after)[None, :, None]
    assert rollout.shape == (1, steps)
    trainer.estimate_advantages(rollout)

    epochs = iter(torch.cat(saved["minibatches"]).split(steps))
    losses: dict[str, list[float]] = {"loss_objective": [], "loss_critic": []}
    grads: dict[str, torch.Tensor] = {}

    def record_losses(module, args, output):
        for key in losses:
            losses[key].append(float(output[key]))

    def record_first_grads(optimizer, args, kwargs):
        if not grads:
            grads.update({name: p.grad.detach().clone() for name, p in rlexp_params.items()})

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    real_randperm = torch.randperm
    torch.randperm = lambda n, **kwargs: next(epochs)  # CleanRL's shuffles, epoch by epoch
    hooks = [trainer.loss_module.register_forward_hook(record_losses),
             register_optimizer_step_pre_hook(record_first_grads)]
    try:
        trainer.update(rollout)
    finally:
        torch.randperm = real_randperm
        for hook in hooks:
            hook.remove()

    def largest(a, b) -> float:
        return float((torch.as_tensor(a, dtype=torch.float64) - torch.as_tensor(b, dtype=torch.float64)).abs().max())

    rows = {}
    for name, (observations, rewards) in normalised(saved["raw"], cfg.env.normalize.gamma).items():
        rows[f"observations, raw stream normalised by {name}"] = largest(observations[:steps], saved["obs"][:, 0])
        rows[f"rewards, relative, normalised by {name}"] = largest(rewards / saved["rewards"][:, 0].numpy(), 1.0)
    advantage = rollout["advantage"].reshape(-1)
    return rows | {
        "state values (the critic at collection)": largest(rollout["state_value"].reshape(-1), saved["values"][:, 0]),
        "advantage (GAE)": largest(advantage, saved["advantages"][:, 0]),
        "advantage, relative to its std": largest(advantage, saved["advantages"][:, 0]) / float(advantage.std()),
        "value target (returns)": largest(rollout["value_target"].reshape(-1), saved["returns"][:, 0]),
        "first step's clipped gradients": max(largest(grads[n].reshape(g.shape), g)
                                              for n, g in saved["first_grads"].items()),
        "policy loss, first minibatch": largest(losses["loss_objective"][0], saved["pg_loss"][0]),
        "policy loss, any minibatch": largest(losses["loss_objective"], saved["pg_loss"]),
        # CleanRL's value term is vf_coef (0.5) x v_loss; rlexp's loss_critic carries its coefficient
        "value loss, first minibatch": largest(losses["loss_critic"][0], 0.5 * saved["v_loss"][0]),
        "value loss, any minibatch": largest(losses["loss_critic"], [0.5 * v for v in saved["v_loss"]]),
        "parameters after the iteration": max(largest(rlexp_params[n].detach().reshape(v.shape), v)
                                              for n, v in saved["final"].items()),
        "parameters moved by the iteration": max(largest(saved["final"][n], v) for n, v in saved["initial"].items()),
        "minibatches": len(losses["loss_objective"]),
    }


def rlexp_parameters(trainer) -> dict:
    """rlexp's parameters under the names of CleanRL's ``Agent`` (separate 64-64 actor and critic)."""
    actor = dict(trainer.actor.named_parameters())
    critic = dict(trainer.critic.named_parameters())

    def one(params: dict, suffix: str):
        (match,) = [p for name, p in params.items() if name.endswith(suffix)]
        return match

    names = {"actor_logstd": one(actor, "log_std")}
    for index, suffix in ((0, "trunk.0"), (2, "trunk.2"), (4, "loc")):
        for kind in ("weight", "bias"):
            names[f"actor_mean.{index}.{kind}"] = one(actor, f"{suffix}.{kind}")
    for index, suffix in ((0, "0.0"), (2, "0.2"), (4, "1")):
        for kind in ("weight", "bias"):
            names[f"critic.{index}.{kind}"] = one(critic, f"module.{suffix}.{kind}")
    return names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cleanrl-script", type=Path, required=True)
    parser.add_argument("--cleanrl-python", type=Path, help="the Python that runs CleanRL's script (its own venv)")
    parser.add_argument("--env-ids", nargs="+", default=["Walker2d-v4"], choices=[f"{e}-v4" for e in ENVS])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--capture-to", type=Path, help=argparse.SUPPRESS)  # the capture half, in CleanRL's Python
    args = parser.parse_args()
    script = args.cleanrl_script.resolve()
    if args.capture_to:
        capture(script, args.env_ids[0], args.seed, args.capture_to)
        return
    columns = {}
    for env_id in args.env_ids:
        with tempfile.TemporaryDirectory() as folder:
            saved = Path(folder) / "cleanrl_iteration.pt"
            subprocess.run([str(args.cleanrl_python), __file__, "--cleanrl-script", str(script), "--env-ids", env_id,
                            "--seed", str(args.seed), "--capture-to", str(saved)], cwd=folder, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
            columns[env_id] = compare(saved, env_id, args.seed)
    print(f"Largest absolute difference between CleanRL's first iteration (seed {args.seed}) and the same iteration "
          "replayed through `+experiment=cleanrl_mujoco`:\n")
    print("| | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    for row in next(iter(columns.values())):
        print(f"| {row} | " + " | ".join(f"{c[row]:.3g}" for c in columns.values()) + " |")


if __name__ == "__main__":
    main()
