"""MultiDiscrete action spaces end to end: the distribution, the env wrapper, the policy heads, training.

The test env ``rlexp-test/MatchDigits-v0`` (registered below) shows a one-hot target for each of the
action's two dimensions; the reward is the number of dimensions the action matches (0..2 per step,
8 steps an episode), so a random policy scores 8 * (1/3 + 1/4) = 4.7 and a perfect one 16.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from support import compose_config
from tensordict import TensorDict
from tensordict.nn import ProbabilisticTensorDictSequential
from torch import distributions as D

from rlexp.envs.tensordict_env import TensorDictVectorEnv
from rlexp.loggers import Logger
from rlexp.modules.distributions import MultiCategorical
from rlexp.objectives import KLPENPPOLoss
from rlexp.policies.heads import action_head, mlp_trunk
from rlexp.registry import ConfigError
from rlexp.trainer import train

NVEC, START = (3, 4), (1, -2)
ENV_ID = "rlexp-test/MatchDigits-v0"


class MatchDigits(gym.Env):
    """Targets drawn per step; actions are offset by the space's ``start``, as gymnasium defines them."""

    def __init__(self):
        self.observation_space = spaces.Box(0.0, 1.0, (sum(NVEC),), np.float32)
        self.action_space = spaces.MultiDiscrete(NVEC, start=START)

    def _observe(self):
        self._target = np.array([self.np_random.integers(n) for n in NVEC])
        return np.concatenate([np.eye(n, dtype=np.float32)[t] for n, t in zip(NVEC, self._target)])

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self._observe(), {}

    def step(self, action):
        reward = float((np.asarray(action) - np.asarray(START) == self._target).sum())
        return self._observe(), reward, False, False, {}


if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=MatchDigits, max_episode_steps=8)


def test_multicategorical_matches_independent_categoricals():
    torch.manual_seed(0)
    logits = torch.randn(5, 7)
    dist = MultiCategorical(logits, NVEC)
    a, b = D.Categorical(logits=logits[:, :3]), D.Categorical(logits=logits[:, 3:])
    torch.manual_seed(1)
    action = dist.sample()
    torch.manual_seed(1)
    assert torch.equal(action, torch.stack([a.sample(), b.sample()], -1))  # the same draws, head by head
    assert action.shape == (5, 2) and dist.event_shape == (2,)
    torch.testing.assert_close(dist.log_prob(action), a.log_prob(action[:, 0]) + b.log_prob(action[:, 1]))
    torch.testing.assert_close(dist.entropy(), a.entropy() + b.entropy())
    assert torch.equal(dist.deterministic_sample, torch.stack([a.probs.argmax(-1), b.probs.argmax(-1)], -1))
    other = MultiCategorical(torch.randn(5, 7), NVEC)
    expected = D.kl_divergence(a, other.heads[0]) + D.kl_divergence(b, other.heads[1])
    torch.testing.assert_close(D.kl_divergence(dist, other), expected)
    with pytest.raises(ValueError, match="needs 7 logits for nvec=\\[3, 4\\], got 6"):
        MultiCategorical(torch.randn(5, 6), NVEC)


def test_env_wrapper_offsets_actions_by_start_and_rejects_dict_spaces():
    env = TensorDictVectorEnv(gym.make_vec(ENV_ID, 2, vectorization_mode="sync",
                                           vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}))
    root = env.reset(seed=0)
    obs = root["observation"]
    target = torch.stack([obs[:, :3].argmax(-1), obs[:, 3:].argmax(-1)], -1)
    step, _ = env.step_and_maybe_reset({**root, "action": target})  # indices 0..n-1, the policy's view
    assert step["next", "reward"].flatten().tolist() == [2.0, 2.0]
    env.close()

    class DictActions(MatchDigits):
        def __init__(self):
            super().__init__()
            self.action_space = spaces.Dict({"a": spaces.Discrete(3), "b": spaces.Discrete(4)})

    vec = gym.vector.SyncVectorEnv([DictActions], autoreset_mode=AutoresetMode.SAME_STEP)
    with pytest.raises(ConfigError, match="Dict action space .* flatten it into a MultiDiscrete or Box space"):
        TensorDictVectorEnv(vec)


def test_policy_head_samples_one_index_per_dimension():
    space = spaces.MultiDiscrete(NVEC)
    params, sampler = action_head(space, "observation", mlp_trunk(7, [16], "tanh"), 16, distribution="auto",
                                  log_std_init=0.0, policy="mlp")
    actor = ProbabilisticTensorDictSequential(params, sampler)
    with torch.no_grad():
        td = actor(TensorDict({"observation": torch.rand(6, 7)}, [6]))
    assert td["action"].shape == (6, 2) and td["logits"].shape == (6, 7)
    assert (td["action"] >= 0).all() and (td["action"] < torch.tensor(NVEC)).all()
    dist = actor.get_dist(td)
    torch.testing.assert_close(td["action_log_prob"], dist.log_prob(td["action"]))
    assert td["action_log_prob"].shape == (6,)
    with pytest.raises(ConfigError, match="does not fit the env's action space"):
        action_head(space, "observation", mlp_trunk(7, [16], "tanh"), 16, distribution="normal",
                    log_std_init=0.0, policy="mlp")
    # The KL-penalised loss reads the stored logits back into a MultiCategorical and uses the closed-form KL.
    td["advantage"], td["value_target"] = torch.randn(6, 1), torch.randn(6, 1)
    out = KLPENPPOLoss(actor)(td)
    assert torch.isfinite(out["kl"]).all() and float(out["kl"].abs().max()) < 1e-6


@pytest.mark.parametrize("policy", ["mlp", "gru"])
def test_clip_ppo_learns_multidiscrete_actions(tmp_path, policy):
    # 16 updates of 512 frames: a short budget, so the check stays quick with either policy.
    cfg = compose_config("logger=none", f"policy={policy}", "env=gym", f"env.id={ENV_ID}", "env.num_envs=8",
                         "collector.frames_per_batch=512", "collector.total_frames=8192", "optim.lr=0.003",
                         "eval.interval=1000000", "eval.episodes=8", "checkpoint.interval=1000000", "seed=0")
    result = train(cfg, tmp_path, make_logger=Logger)
    assert result["eval/episode_return"] >= 14, result  # random: 4.7, perfect: 16
