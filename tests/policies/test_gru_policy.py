"""policy=gru in the framework: stored hidden states, exact recurrent replay, sequence minibatches, training."""

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, set_interaction_type

from rlexp.collector import MASK, Collector, EpisodeCollector, evaluate
from rlexp.envs.gym import make_gym_env
from rlexp.loggers import Logger
from rlexp.modules import set_recurrent_mode
from rlexp.objectives.value import GAE
from rlexp.policies import RecurrentStates, rollout_policy
from rlexp.registry import policies
from rlexp.trainer import Minibatches, train
from support import compose_config

CPU = torch.device("cpu")


def build(env, **options):
    torch.manual_seed(0)
    return policies.build({"name": "gru", "hidden_size": 8, "head_sizes": [8], **options},
                          env.observation_space, env.action_space)


def short_episode_rollout(shared_trunk=False, env_id="CartPole-v1", frames=4 * 24):
    """Two consecutive rollouts of 4 envs whose 7-step episodes put several resets inside each row."""
    env = make_gym_env(id=env_id, num_envs=4, max_episode_steps=7)
    actor, critic = build(env, shared_trunk=shared_trunk)
    collector = Collector(env, rollout_policy(actor, critic), frames, CPU, seed=0)
    return actor, critic, collector.collect(), collector.collect()


def replayed_log_prob(actor, batch):
    """Log-probs of the stored actions with the GRU replaying every row from its stored first state."""
    with set_recurrent_mode(True):
        return actor.get_dist(batch.select(*actor.in_keys)).log_prob(batch["action"])


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_builds_actor_and_critic_for_discrete_and_box_actions(env_id):
    env = make_gym_env(id=env_id, num_envs=2)
    for shared in (False, True):
        actor, critic = build(env, shared_trunk=shared)
        td = TensorDict(RecurrentStates(actor, critic).reset(env.reset(seed=0)), batch_size=[2])
        critic(actor(td))
        assert td["action"].shape == (2, *env.action_space.shape)
        assert td["action_log_prob"].shape == (2,) and td["state_value"].shape == (2, 1)
        state = "recurrent_state" if shared else "actor_state"
        assert td["next", state].shape == (2, 1, 8) and td["next", state].abs().sum() > 0
        assert ({p for p in actor.parameters()} & {p for p in critic.parameters()} != set()) == shared
        assert (rollout_policy(actor, critic) is actor) == shared  # a separate critic GRU is stepped too
    actor, critic = build(env, critic=False)
    assert critic is None and rollout_policy(actor, None) is actor
    mlp_actor, mlp_critic = policies.build({"name": "mlp"}, env.observation_space, env.action_space)
    assert not RecurrentStates(mlp_actor, mlp_critic)  # feed-forward policies carry no state


@pytest.mark.parametrize("shared_trunk", [False, True])
def test_collector_stores_states_and_is_init_across_resets_and_calls(shared_trunk):
    _, _, first, second = short_episode_rollout(shared_trunk)
    keys = ["recurrent_state"] if shared_trunk else ["actor_state", "critic_state"]
    for rollout in (first, second):
        is_init = rollout["is_init"].squeeze(-1)
        assert is_init[:, 1:].any() and (~is_init).any()
        # is_init marks exactly the steps after an episode's end (and the very first reset)
        assert torch.equal(is_init[:, 1:], rollout["next", "done"].squeeze(-1)[:, :-1])
        for key in keys:
            state, next_state = rollout[key], rollout["next", key]
            assert not state[is_init].any()  # primed zeros at every episode start
            carried = ~is_init[:, 1:]
            assert torch.equal(state[:, 1:][carried], next_state[:, :-1][carried])
            assert state[~is_init].abs().amin(-1).amin(-1).gt(0).all()
    assert first["is_init"][:, 0].all()
    for key in keys:  # the next call continues from the state the previous one ended with
        keep = ~second["is_init"][:, 0, 0]
        assert torch.equal(second[key][:, 0][keep], first["next", key][:, -1][keep])


@pytest.mark.parametrize("shared_trunk", [False, True])
def test_recurrent_replay_reproduces_collected_log_probs_and_values(shared_trunk):
    actor, critic, _, rollout = short_episode_rollout(shared_trunk)
    torch.testing.assert_close(replayed_log_prob(actor, rollout), rollout["action_log_prob"], rtol=0, atol=1e-6)
    with set_recurrent_mode(True):
        values = critic(rollout.select(*critic.in_keys))["state_value"]
    step_values = critic(rollout.select(*critic.in_keys).reshape(-1))["state_value"]  # step mode, stored states
    torch.testing.assert_close(values, step_values.reshape(values.shape), rtol=0, atol=1e-6)
    # Bootstrap values: "next" continues each row's recurrence from ("next", state), so inside an
    # episode V(next)[t] == V[t+1], and at an episode end it is the critic's value of the final observation.
    estimator = GAE(gamma=0.9, lmbda=0.8, value_network=critic)
    with set_recurrent_mode(True):
        estimator(rollout)
    next_value, done = rollout["next", "state_value"], rollout["next", "done"].squeeze(-1)
    torch.testing.assert_close(rollout["state_value"], values, rtol=0, atol=1e-6)
    torch.testing.assert_close(next_value[:, :-1][~done[:, :-1]], values[:, 1:][~done[:, :-1]], rtol=0, atol=1e-6)
    final = rollout[done]["next"]
    step = final.select("observation", *[key for key in critic.in_keys if key.endswith("state")])
    step["is_init"] = torch.zeros(len(final), 1, dtype=torch.bool)
    torch.testing.assert_close(critic(step)["state_value"], next_value[done], rtol=0, atol=1e-6)


def test_minibatches_are_contiguous_slices_replayed_from_their_stored_state():
    actor, _, _, rollout = short_episode_rollout(frames=4 * 24)
    rollout["env_index"] = torch.arange(4)[:, None].expand(4, 24)
    rollout["step_index"] = torch.arange(24).expand(4, 24)
    seen, shapes = [], []
    for batch in Minibatches(rollout, num_minibatches=3, sequence_length=6):
        shapes.append(tuple(batch.shape))
        env_index, step_index = batch["env_index"], batch["step_index"]
        assert (env_index == env_index[:, :1]).all()
        assert torch.equal(step_index - step_index[:, :1], torch.arange(6).expand_as(step_index))
        assert (step_index[:, 0] % 6 == 0).all()
        torch.testing.assert_close(replayed_log_prob(actor, batch), batch["action_log_prob"], rtol=0, atol=1e-6)
        seen += (env_index * 24 + step_index).flatten().tolist()
    assert shapes == [(6, 6), (6, 6), (4, 6)]  # 16 slices of 6 steps in 3 minibatches
    assert sorted(seen) == list(range(96))  # one epoch visits every frame once
    rows = list(Minibatches(rollout, num_minibatches=2, sequence_length=0))
    assert [b.shape for b in rows] == [(2, 24), (2, 24)]


def test_grpo_rows_stay_whole_with_their_mask():
    env = make_gym_env(id="CartPole-v1", num_envs=4, max_episode_steps=9)
    actor, _ = build(env, critic=False)
    rollout = EpisodeCollector(env, actor, group_size=2, device=CPU, seed=0).collect()
    assert not rollout["actor_state"][:, 0].any()
    batches = list(Minibatches(rollout, num_minibatches=2, sequence_length=4))
    assert [b.shape for b in batches] == [(2, rollout.shape[1])] * 2
    assert sorted(b[MASK].sum().item() for b in batches) != [0, 0]
    for batch in batches:
        torch.testing.assert_close(replayed_log_prob(actor, batch), batch["action_log_prob"], rtol=0, atol=1e-6)


def test_evaluate_feeds_the_policy_primed_and_carried_states():
    env = make_gym_env(id="CartPole-v1", num_envs=3, observation_indices=[0, 2], max_episode_steps=6)
    actor, _ = build(env, critic=False)
    gru = actor.module[0]
    inputs, outputs = [], []
    step = gru.step

    def recorded_step(x, hidden, is_init):  # the evaluation loop steps the GRU through GRUModule.step
        inputs.append({"actor_state": hidden.clone(), "is_init": is_init.clone()})
        output, next_hidden = step(x, hidden, is_init)
        outputs.append(next_hidden.clone())
        return output, next_hidden

    gru.step = recorded_step
    evaluate(env, actor, CPU, seed=5)
    assert len(inputs) >= 2
    for t, step in enumerate(inputs):
        is_init = step["is_init"].squeeze(-1)
        assert not step["actor_state"][is_init].any()
        if t:
            assert torch.equal(step["actor_state"][~is_init], outputs[t - 1][~is_init])
    assert any(not step["is_init"].all() for step in inputs)


@pytest.mark.parametrize("loss", ["clip_ppo", "grpo"])
def test_short_training_run(tmp_path, loss):
    overrides = ["logger=none", "policy=gru", "env=cartpole_masked", f"loss={loss}", "policy.hidden_size=16",
                 "eval.interval=1000000", "eval.episodes=2", "seed=0"]
    if loss == "grpo":
        overrides += ["env.num_envs=8", "collector.group_size=4", "+env.max_episode_steps=40",
                      "collector.total_frames=600"]
    else:
        overrides += ["collector.total_frames=2048", "collector.frames_per_batch=512", "optim.sequence_length=8"]
    result = train(compose_config(*overrides), tmp_path, make_logger=Logger)
    assert result["frames"] >= (600 if loss == "grpo" else 2048)
    assert torch.isfinite(torch.tensor(result["eval/episode_return"])) and result["eval/episode_return"] >= 1
