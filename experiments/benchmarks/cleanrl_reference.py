"""CleanRL's ppo.py (discrete-action PPO) on CartPole-v1, re-implemented in one plain-torch file.

The reference trainer of rlexp's speed benchmark (experiments/benchmarks/speed_cartpole.py). It follows
the published algorithm and defaults of CleanRL's ``ppo.py`` (no code copied):

* 4 envs x 128 steps = 512 frames per iteration, 500k frames, seed 1;
* Adam (eps 1e-5), lr 2.5e-4 linearly annealed to 0 per iteration: ``lr * (1 - (i - 1) / num_iterations)``;
* GAE with gamma 0.99, lambda 0.95 as CleanRL's backward loop (``dones[t]`` = "obs[t] starts an episode");
  terminated and truncated episodes both end the bootstrap (CleanRL's ``next_done = term | trunc``);
* 4 epochs x 4 shuffled minibatches of 128, per-minibatch advantage normalisation ``(A - mean) / (std + 1e-8)``,
  clip 0.2, clipped value loss ``0.5 * max((v - R)^2, (v_old + clip(v - v_old) - R)^2)``, entropy 0.01,
  vf 0.5, global grad-norm clip 0.5, no target KL;
* separate actor and critic MLPs 64x64 tanh, orthogonal init (gain sqrt 2, actor head 0.01, critic head 1);
* one torch thread (the issue's measurement setting; CleanRL itself leaves torch's default).

Autoreset (gymnasium 1.x). CleanRL's code was written for gymnasium 0.29, whose vector envs reset a finished
sub-env *in the same step* (the returned observation is already the next episode's first one). gymnasium 1.x
defaults to *next-step* autoreset: the step after an episode ends ignores its action and returns the reset
observation with reward 0. Run unchanged, CleanRL's rollout would contain one non-transition per episode
(terminal observation, ignored action, reward 0). Here:

* ``--vector sync`` (default): ``gymnasium.make_vec(..., "sync", autoreset_mode=SAME_STEP)`` over 4 Python
  CartPole envs, i.e. exactly the semantics (and the env cost) CleanRL's code assumes;
* ``--vector numpy``: gymnasium's numpy-vectorised ``CartPoleVectorEnv`` (next-step autoreset only). The
  autoreset steps are stored but marked invalid: GAE never propagates into them (the step before has
  ``next_done``) and they are left out of every minibatch and of the advantage normalisation. They still count
  as env frames (the env did step).

Episode returns come from ``gymnasium.wrappers.vector.RecordEpisodeStatistics`` (which knows both modes).

Run: ``.venv/bin/python experiments/benchmarks/cleanrl_reference.py [--seed 1] [--total-timesteps 500000]
[--vector sync|numpy] [--json]``. ``--json`` prints one JSON object per iteration (wall time ``t``, frames,
returns of the episodes that ended, seconds spent in env steps / policy calls / GAE / update) for the
benchmark script; otherwise a progress line every 20 iterations.
"""

from __future__ import annotations

import time

T_IMPORT = time.time()  # before the heavy imports, so the JSON output can report the import cost

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.distributions.categorical import Categorical  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    flag = argparse.BooleanOptionalAction
    p.add_argument("--env-id", default="CartPole-v1")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--total-timesteps", type=int, default=500_000)
    p.add_argument("--learning-rate", type=float, default=2.5e-4)
    p.add_argument("--num-envs", type=int, default=4)
    p.add_argument("--num-steps", type=int, default=128)
    p.add_argument("--anneal-lr", action=flag, default=True)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--gae-lambda", type=float, default=0.95)
    p.add_argument("--num-minibatches", type=int, default=4)
    p.add_argument("--update-epochs", type=int, default=4)
    p.add_argument("--norm-adv", action=flag, default=True)
    p.add_argument("--clip-coef", type=float, default=0.2)
    p.add_argument("--clip-vloss", action=flag, default=True)
    p.add_argument("--ent-coef", type=float, default=0.01)
    p.add_argument("--vf-coef", type=float, default=0.5)
    p.add_argument("--max-grad-norm", type=float, default=0.5)
    p.add_argument("--target-kl", type=float, default=None)
    p.add_argument("--torch-deterministic", action=flag, default=True)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: leave torch's default)")
    p.add_argument("--vector", choices=("sync", "numpy"), default="sync",
                   help="sync: make_vec sync with same-step autoreset; numpy: CartPoleVectorEnv, next-step autoreset")
    p.add_argument("--json", action="store_true", help="one JSON object per iteration on stdout")
    args = p.parse_args(argv)
    args.batch_size = args.num_envs * args.num_steps
    args.minibatch_size = args.batch_size // args.num_minibatches
    args.num_iterations = args.total_timesteps // args.batch_size
    return args


def layer_init(layer: nn.Linear, std: float = np.sqrt(2), bias_const: float = 0.0) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias_const)
    return layer


class Agent(nn.Module):
    def __init__(self, obs_dim: int, n_actions: int):
        super().__init__()
        self.critic = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 1), std=1.0),
        )
        self.actor = nn.Sequential(
            layer_init(nn.Linear(obs_dim, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, 64)), nn.Tanh(),
            layer_init(nn.Linear(64, n_actions), std=0.01),
        )

    def get_value(self, x: torch.Tensor) -> torch.Tensor:
        return self.critic(x)

    def get_action_and_value(self, x: torch.Tensor, action: torch.Tensor | None = None):
        logits = self.actor(x)
        probs = Categorical(logits=logits)
        if action is None:
            action = probs.sample()
        return action, probs.log_prob(action), probs.entropy(), self.critic(x)


def make_envs(args: argparse.Namespace) -> gym.vector.VectorEnv:
    if args.vector == "sync":
        envs = gym.make_vec(args.env_id, args.num_envs, vectorization_mode="sync",
                            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    else:
        envs = gym.make_vec(args.env_id, args.num_envs, vectorization_mode="vector_entry_point")
    return gym.wrappers.vector.RecordEpisodeStatistics(envs)


def main(argv=None) -> None:
    args = parse_args(argv)
    t_start = time.time()
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")

    envs = make_envs(args)
    next_step_autoreset = envs.metadata.get("autoreset_mode") == gym.vector.AutoresetMode.NEXT_STEP
    assert isinstance(envs.single_action_space, gym.spaces.Discrete), "only discrete action spaces are supported"
    envs.single_action_space.seed(args.seed)
    agent = Agent(int(np.prod(envs.single_observation_space.shape)), int(envs.single_action_space.n)).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)

    shape = (args.num_steps, args.num_envs)
    obs = torch.zeros(shape + envs.single_observation_space.shape).to(device)
    actions = torch.zeros(shape + envs.single_action_space.shape).to(device)
    logprobs = torch.zeros(shape).to(device)
    rewards = torch.zeros(shape).to(device)
    dones = torch.zeros(shape).to(device)
    values = torch.zeros(shape).to(device)
    valid = np.ones(shape, dtype=bool)  # False at next-step autoreset steps (never with --vector sync)

    global_step = 0
    next_obs, _ = envs.reset(seed=args.seed)
    next_obs = torch.Tensor(next_obs).to(device)
    next_done = torch.zeros(args.num_envs).to(device)
    autoreset = np.zeros(args.num_envs, dtype=bool)  # the previous step ended these episodes (next-step mode)
    loop_start = time.time()
    if args.json:
        print(json.dumps({"event": "start", "t": loop_start, "t_import": T_IMPORT, "t_main": t_start,
                          "next_step_autoreset": next_step_autoreset}), flush=True)

    for iteration in range(1, args.num_iterations + 1):
        t_iter = time.perf_counter()
        t_env = t_policy = 0.0
        if args.anneal_lr:
            frac = 1.0 - (iteration - 1.0) / args.num_iterations
            optimizer.param_groups[0]["lr"] = frac * args.learning_rate
        episode_returns: list[float] = []
        episode_lengths: list[int] = []

        for step in range(args.num_steps):
            global_step += args.num_envs
            obs[step] = next_obs
            dones[step] = next_done
            valid[step] = ~autoreset

            t0 = time.perf_counter()
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
                values[step] = value.flatten()
            actions[step] = action
            logprobs[step] = logprob
            t1 = time.perf_counter()

            next_obs, reward, terminations, truncations, infos = envs.step(action.cpu().numpy())
            t2 = time.perf_counter()
            t_policy += t1 - t0
            t_env += t2 - t1
            done = np.logical_or(terminations, truncations)
            if next_step_autoreset:
                autoreset = done
            rewards[step] = torch.tensor(reward).to(device).view(-1)
            next_obs, next_done = torch.Tensor(next_obs).to(device), torch.Tensor(done).to(device)

            if "episode" in infos:
                finished = infos["_episode"]
                episode_returns += infos["episode"]["r"][finished].tolist()
                episode_lengths += infos["episode"]["l"][finished].tolist()
        t_rollout = time.perf_counter()

        # bootstrap value if not done
        with torch.no_grad():
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards).to(device)
            lastgaelam = 0
            for t in reversed(range(args.num_steps)):
                if t == args.num_steps - 1:
                    nextnonterminal = 1.0 - next_done
                    nextvalues = next_value
                else:
                    nextnonterminal = 1.0 - dones[t + 1]
                    nextvalues = values[t + 1]
                delta = rewards[t] + args.gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + args.gamma * args.gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values
        t_gae = time.perf_counter()

        # flatten the batch
        b_obs = obs.reshape((-1,) + envs.single_observation_space.shape)
        b_logprobs = logprobs.reshape(-1)
        b_actions = actions.reshape((-1,) + envs.single_action_space.shape)
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        b_values = values.reshape(-1)

        # Optimizing the policy and value network
        b_inds = np.flatnonzero(valid.reshape(-1))
        clipfracs = []
        for epoch in range(args.update_epochs):
            np.random.shuffle(b_inds)
            if len(b_inds) == args.batch_size:
                minibatches = [b_inds[s:s + args.minibatch_size] for s in range(0, args.batch_size, args.minibatch_size)]
            else:  # autoreset steps left out: the same number of (slightly smaller) minibatches
                minibatches = np.array_split(b_inds, args.num_minibatches)
            for mb_inds in minibatches:
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(b_obs[mb_inds], b_actions.long()[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()

                with torch.no_grad():
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs += [((ratio - 1.0).abs() > args.clip_coef).float().mean().item()]

                mb_advantages = b_advantages[mb_inds]
                if args.norm_adv:
                    mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)

                # Policy loss
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - args.clip_coef, 1 + args.clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()

                # Value loss
                newvalue = newvalue.view(-1)
                if args.clip_vloss:
                    v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                    v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds],
                                                                -args.clip_coef, args.clip_coef)
                    v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                    v_loss_max = torch.max(v_loss_unclipped, v_loss_clipped)
                    v_loss = 0.5 * v_loss_max.mean()
                else:
                    v_loss = 0.5 * ((newvalue - b_returns[mb_inds]) ** 2).mean()

                entropy_loss = entropy.mean()
                loss = pg_loss - args.ent_coef * entropy_loss + v_loss * args.vf_coef

                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                optimizer.step()

            if args.target_kl is not None and approx_kl > args.target_kl:
                break

        # the statistics CleanRL writes to TensorBoard every iteration
        y_pred, y_true = b_values.cpu().numpy(), b_returns.cpu().numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        stats = {"learning_rate": optimizer.param_groups[0]["lr"], "value_loss": v_loss.item(),
                 "policy_loss": pg_loss.item(), "entropy": entropy_loss.item(), "old_approx_kl": old_approx_kl.item(),
                 "approx_kl": approx_kl.item(), "clipfrac": float(np.mean(clipfracs)),
                 "explained_variance": float(explained_var)}
        t_end = time.perf_counter()
        if args.json:
            print(json.dumps({"event": "iteration", "t": time.time(), "iteration": iteration, "frames": global_step,
                              "returns": episode_returns, "lengths": episode_lengths,
                              "seconds": {"iteration": t_end - t_iter, "env": t_env, "policy": t_policy,
                                          "rollout": t_rollout - t_iter, "gae": t_gae - t_rollout,
                                          "update": t_end - t_gae}, **stats}), flush=True)
        elif iteration % 20 == 0 or iteration == args.num_iterations:
            sps = int(global_step / (time.time() - loop_start))
            ret = f"{np.mean(episode_returns):.1f}" if episode_returns else "-"
            print(f"iteration {iteration}/{args.num_iterations} global_step={global_step} SPS={sps} return={ret}",
                  flush=True)

    loop_seconds = time.time() - loop_start
    if args.json:
        print(json.dumps({"event": "end", "t": time.time(), "frames": global_step, "loop_seconds": loop_seconds}),
              flush=True)
    else:
        print(f"done: {global_step} frames in {loop_seconds:.1f} s ({global_step / loop_seconds:,.0f} frames/s)")
    envs.close()


if __name__ == "__main__":
    main()
