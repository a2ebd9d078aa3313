"""num_seeds > 1: several seeds in one process train as independent runs.

The reference for the stacked update is the plain one: each seed's own loss module, its own Adam and
torch's ``clip_grad_norm_``, stepped one seed at a time on the same minibatches.
"""

import json
import math
import os

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from support import compose_config, kill_when, read_wandb_runs, resume_cli, run_cli
from test_resume import metrics
from rlexp.collector import MASK
from rlexp.compare.runs import load_runs
from rlexp.envs import NormalizeConfig, Normalizer
from rlexp.loggers import Logger
from rlexp.registry import ConfigError, losses, policies, value_estimators
from rlexp.seeds import STOPPED, SeedLoggers, SeedsTrainer
from rlexp.trainer import NonFiniteLoss, unchecked_distributions
from rlexp.validation import validate_config

SMALL = ["env.num_envs=4", "collector.frames_per_batch=64", "optim.num_minibatches=2", "optim.ppo_epochs=2",
         "eval.episodes=2", "logger=none"]


def trainer(*overrides: str, num_seeds: int = 3) -> SeedsTrainer:
    cfg = compose_config(f"num_seeds={num_seeds}", *SMALL, *overrides)
    validate_config(cfg)
    torch.manual_seed(cfg.seed)
    return SeedsTrainer(cfg, torch.device("cpu"), run={})


def separate_losses(seeds: SeedsTrainer) -> list:
    """Each seed's loss as a module of its own, holding that seed's current parameters (and adaptive buffers)."""
    cfg, env = seeds.cfg, seeds.env
    modules = []
    for k in range(len(seeds.seeds)):
        actor, critic = policies.build(cfg.policy, env.observation_space, env.action_space)
        loss = losses.build(cfg.loss, actor, critic)
        loss.make_value_estimator(value_estimators.build(cfg.value_estimator, value_network=critic))
        own = TensorDict.from_module(loss).select(*seeds.params.keys(True, True))
        with torch.no_grad():
            own.update_(seeds.params[k].data)
        modules.append(loss)
    return modules


def reference_update(cfg, modules: list, rollout: TensorDict) -> None:
    """``SeedsTrainer.update``'s algorithm written per seed: the same shuffles, then one loss, clip and step each."""
    n = len(modules)
    optimizers = [torch.optim.Adam(m.parameters(), lr=cfg.optim.lr, eps=cfg.optim.eps) for m in modules]
    batch = rollout.exclude("next").reshape(n, -1)
    masked = MASK in batch.keys(True)  # grouped episodes: valid frames first, padding marked invalid (NaN)
    if masked:
        batch["action_log_prob"] = torch.where(batch[MASK], batch["action_log_prob"], torch.nan)
    slots = int(batch[MASK].sum(1).max()) if masked else batch.shape[1]
    size = math.ceil(slots / cfg.optim.num_minibatches)
    for _epoch in range(cfg.optim.ppo_epochs):
        order = torch.rand(batch.shape)
        order = (order - 2 * batch[MASK] if masked else order).argsort(1)[:, :slots]
        for index in order.split(size, dim=1):
            for k, (module, optimizer) in enumerate(zip(modules, optimizers)):
                out = module(batch[k][index[k]])
                loss = sum(value for key, value in out.items() if key.startswith("loss_"))
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(list(module.parameters()), cfg.optim.max_grad_norm)
                optimizer.step()


@pytest.mark.parametrize("overrides", [["loss=clip_ppo"], ["loss=ppo", "value_estimator=td1"], ["loss=klpen_ppo"],
                                       ["loss=clip_ppo", "env=pendulum", "collector.frames_per_batch=64"],
                                       ["loss=grpo", "env.num_envs=8", "collector.group_size=4",
                                        "loss.kl_to_ref_coeff=0.5"]],
                         ids=["clip_ppo", "ppo_td1", "klpen_ppo", "pendulum", "grpo"])
def test_each_seed_updates_as_its_own_run_would(overrides):
    seeds = trainer(*overrides)
    with unchecked_distributions():
        rollout, _ = seeds.collect()
        seeds.estimate_advantages(rollout)
        separate = separate_losses(seeds)
        for k, module in enumerate(separate):  # the advantages: each seed's own estimator on its own rollout
            own = rollout[k].exclude("advantage", "value_target", "state_value")
            module.value_estimator(own)
            torch.testing.assert_close(own["advantage"], rollout[k]["advantage"], rtol=1e-5, atol=1e-5)
            if seeds.reference is not None:  # GRPO's reference: the seed's initial actor
                dist = module.actor_network.get_dist(rollout[k].select("observation"))
                torch.testing.assert_close(rollout[k][seeds.reference.key], dist.log_prob(rollout[k]["action"]))
        state, initial = torch.get_rng_state(), [p.detach().clone() for p in seeds.params.values(True, True)]
        seeds.update(rollout)
        torch.set_rng_state(state)
        reference_update(seeds.cfg, separate, rollout)
    for k, module in enumerate(separate):
        expected = TensorDict.from_module(module).select(*seeds.params.keys(True, True))
        for key, value in expected.items(True, True):
            torch.testing.assert_close(seeds.params[k][key].data, value.data, rtol=1e-4, atol=1e-5, msg=str(key))
    assert not all(torch.equal(a, b) for a, b in zip(initial, seeds.params.values(True, True))), "nothing trained"


def test_seeds_start_apart_and_stay_apart():
    environment = dict(os.environ)
    seeds = trainer()
    assert dict(os.environ) == environment  # child processes (a joblib sweep's workers) inherit it
    weights = [p for p in seeds.params.values(True, True)][0].data
    assert not torch.equal(weights[0], weights[1])  # networks initialised from each seed
    with unchecked_distributions():
        rollout, frames = seeds.collect()
    assert rollout.batch_size[:2] == (3, 4) and frames == 64
    assert not torch.equal(rollout[0]["observation"], rollout[1]["observation"])  # envs seeded apart
    torch.manual_seed(0)
    assert trainer().params.state_dict().keys() == seeds.params.state_dict().keys()


def test_state_dict_continues_every_seed_exactly():
    def iterate(t: SeedsTrainer, times: int) -> list:
        out = []
        for _ in range(times):
            t.progress.iteration += 1
            t.anneal_learning_rate()
            rollout, _ = t.collect()
            t.estimate_advantages(rollout)
            out.append(t.update(rollout))
            out.append(t.episode_metrics())
        return out

    with unchecked_distributions():
        whole = trainer("env=pendulum", "loss=klpen_ppo", "env.normalize.observation=true",
                        "env.normalize.reward=true")
        iterate(whole, 2)
        state = torch.load(_saved(whole.state_dict()), weights_only=False)
        expected = iterate(whole, 2)
        resumed = trainer("env=pendulum", "loss=klpen_ppo", "env.normalize.observation=true",
                          "env.normalize.reward=true", "seed=5")  # built from another seed: the state decides
        resumed.seeds = whole.seeds
        resumed.load_state_dict(state)
        assert _same(iterate(resumed, 2), expected)
    for a, b in zip(whole.params.values(True, True), resumed.params.values(True, True)):
        assert torch.equal(a, b)


def _saved(state: dict):
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return buffer


def _same(a: list[dict], b: list[dict]) -> bool:
    return all(x.keys() == y.keys() and all(np.array_equal(x[k], y[k], equal_nan=True) for k in x) for x, y in zip(a, b))


def test_a_seed_with_a_non_finite_loss_stops_alone():
    seeds = trainer()
    with unchecked_distributions():
        rollout, _ = seeds.collect()
        seeds.estimate_advantages(rollout)
        first = next(iter(seeds.params["actor_network_params"].values(True, True)))
        with torch.no_grad():
            first[1] = float("nan")
        before = [p.detach().clone() for p in seeds.parameters]
        metrics = seeds.update(rollout)
    assert seeds.stopped.tolist() == [False, True, False]
    assert metrics[STOPPED].tolist() == [0, 1, 0]
    assert np.isnan(metrics["loss_objective"][1]) and np.isfinite(metrics["loss_objective"][[0, 2]]).all()
    for p, old in zip(seeds.parameters, before):
        assert torch.equal(p[1].nan_to_num(), old[1].nan_to_num())  # the stopped seed keeps its parameters
        assert not torch.equal(p[0], old[0]) and p[[0, 2]].isfinite().all()
    with torch.no_grad():  # when every seed has stopped, the run stops
        first[[0, 2]] = float("nan")
    with unchecked_distributions(), pytest.raises(NonFiniteLoss, match="every seed"):
        seeds.update(rollout)


def test_skip_drops_only_the_faulty_seeds_minibatches():
    seeds = trainer("trainer.on_nan=skip")
    with unchecked_distributions():
        rollout, _ = seeds.collect()
        seeds.estimate_advantages(rollout)
        rollout["advantage"][2, 0, 0] = float("nan")  # seed 2's minibatch holding this sample: NaN loss
        metrics = seeds.update(rollout)
    assert not seeds.stopped.any()
    assert metrics["train/skipped_batches"].tolist()[:2] == [0, 0] and metrics["train/skipped_batches"][2] >= 1


class Recording(Logger):
    def __init__(self):
        self.rows, self.exit_code = [], None

    def log(self, metrics, step):
        self.rows.append((step, dict(metrics)))

    def finish(self, exit_code=0):
        self.exit_code = exit_code


def test_seed_loggers_give_each_seed_its_values():
    a, b = Recording(), Recording()
    loggers = SeedLoggers([a, b])
    loggers.log({"train/lr": 0.1, "loss": np.array([1.0, 2.0]), "train/episode_return": np.array([np.nan, 5.0]),
                 STOPPED: np.array([0.0, 1.0])}, step=10)
    loggers.log({"loss": np.array([3.0, 4.0]), STOPPED: np.array([0.0, 1.0])}, step=20)
    loggers.finish(0)
    assert a.rows == [(10, {"train/lr": 0.1, "loss": 1.0, STOPPED: 0.0}), (20, {"loss": 3.0, STOPPED: 0.0})]
    assert b.rows == [(10, {"train/lr": 0.1, "loss": 2.0, "train/episode_return": 5.0, STOPPED: 1.0})]
    assert (a.exit_code, b.exit_code) == (0, 3)


def test_grouped_normalizer_equals_one_normalizer_per_group():
    config = NormalizeConfig(observation=True, reward=True, gamma=0.9)
    grouped = Normalizer(config, (3,), num_envs=6, groups=2)
    separate = [Normalizer(config, (3,), num_envs=3) for _ in range(2)]
    rng = np.random.default_rng(0)
    for _ in range(5):
        obs, final, reward = rng.normal(size=(6, 3)) * [1, 10, 100], rng.normal(size=(6, 3)), rng.normal(size=6)
        done = rng.random(6) < 0.3
        got = grouped.observations(obs, final)
        got_reward = grouped.rewards(reward, done)
        for g, normalizer in enumerate(separate):
            rows = slice(3 * g, 3 * g + 3)
            for x, y in zip(got, normalizer.observations(obs[rows], final[rows])):
                np.testing.assert_allclose(x[rows], y, rtol=1e-6)
            np.testing.assert_allclose(got_reward[rows], normalizer.rewards(reward[rows], done[rows]), rtol=1e-6)
    frozen = grouped.frozen_copy(4)
    np.testing.assert_allclose(frozen.observations(obs[[0, 1, 3, 4]])[0][2:], separate[1].frozen_copy(2).observations(
        obs[[3, 4]])[0], rtol=1e-6)


@pytest.mark.parametrize("overrides, message", [
    (["num_seeds=0"], "num_seeds=0 is out of range"),
    (["num_seeds=2", "replay_transform=multistep", "value_estimator=td0"], "replay_transform=multistep"),
    (["num_seeds=2", "eval.video=true"], "eval.video=true is not supported"),
])
def test_unsupported_combinations_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config(*overrides))


def test_recurrent_policies_are_refused():
    with pytest.raises(ConfigError, match="recurrent policy"):
        trainer("policy=gru")


@pytest.mark.e2e
def test_each_seed_is_an_ordinary_run(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli(run_dir, "num_seeds=2", "seed=4", "collector.total_frames=4096", "collector.frames_per_batch=2048",
                     "eval.episodes=2")
    assert result.returncode == 0, result.stderr
    runs, skipped = load_runs([run_dir])
    assert not skipped and sorted(run.seed for run in runs) == [4, 5]
    assert runs[0].config == runs[1].config  # one configuration, two seeds
    for seed in (4, 5):
        rows = [json.loads(line) for line in (run_dir / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["frames"] == 4096 and "eval/episode_return" in rows[-1] and "loss_objective" in rows[-1]
    overrides = "num_seeds=2,seed=4,collector.total_frames=4096,collector.frames_per_batch=2048,eval.episodes=2"
    for seed in (4, 5):  # one W&B run per seed, in the seed's folder, all in the job's group
        (records,) = read_wandb_runs(run_dir / f"seed{seed}")
        (run,) = [r["run"] for r in records if r["type"] == "run"]
        assert run["display_name"] == f"{overrides} seed={seed}" and run["run_group"] == "default"
        assert run["config"]["update"]["seed"] == seed
        history = [r["history"]["item"] for r in records if r["type"] == "history"]
        assert [row["frames"] for row in history] == [2048, 4096] and "loss_objective" in history[-1]


@pytest.mark.e2e
def test_a_killed_num_seeds_run_resumes_every_seed_exactly(tmp_path):
    args = ["num_seeds=2", "collector.total_frames=8192", "collector.frames_per_batch=1024", "env.num_envs=8",
            "eval.interval=2048", "eval.episodes=2", "checkpoint.interval=4096", "logger=csv"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_cli(whole, *args).returncode == 0
    kill_when(killed / "checkpoints" / "checkpoint_000000004096.pt", killed, *args)
    result = resume_cli(killed)
    assert result.returncode == 0, result.stderr
    expected, resumed = (torch.load(folder / "checkpoint.pt", weights_only=False) for folder in (whole, killed))
    for key, value in expected["params"].items():
        assert torch.equal(resumed["params"][key], value), key
    for seed in (0, 1):
        assert metrics(killed / f"seed{seed}") == metrics(whole / f"seed{seed}")
        assert len(metrics(whole / f"seed{seed}")) == 8


def test_evaluate_takes_one_seed_of_a_run(tmp_path):
    from rlexp.evaluate import evaluate_checkpoint
    from rlexp.trainer import train

    cfg = compose_config("num_seeds=2", "seed=3", *SMALL, "env=pendulum", "collector.total_frames=64",
                         "env.normalize.observation=true")
    train(cfg, tmp_path, make_logger=Logger)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=False)
    (tmp_path / "seed4").mkdir()
    returns = evaluate_checkpoint(tmp_path / "seed4", episodes=3, seed=1)
    assert returns.shape == (3,) and returns.isfinite().all()
    weights = [key for key in state["actors"][1] if key.endswith("weight")][0]
    assert not torch.equal(state["actors"][0][weights], state["actors"][1][weights])
    with pytest.raises(ConfigError, match="seed3"):
        evaluate_checkpoint(tmp_path)
