"""A gymnasium vector env that speaks tensordict's keys and torchrl's layout, one step at a time.

Each step yields a flat dict of ``[num_envs, ...]`` tensors keyed by tensordict keys: root
``observation, action, done, terminated, truncated, is_init`` (plus whatever the policy wrote) and
``("next", observation | reward | done | terminated | truncated)``; ``stack_steps`` turns a list of
them into the ``[num_envs, T]`` rollout TensorDict (plain dicts, because building TensorDicts per
step costs several times more than stepping CartPole). ``("next", "observation")`` is always the
observation the action led to, also when the episode ended: a truncated episode bootstraps from its
true final observation, never from the first observation of the next episode, which only appears as
the next root observation (with ``is_init`` set).
"""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from tensordict import NestedKey, TensorDict

from rlexp.registry import ConfigError

Step = dict[NestedKey, torch.Tensor]


def stack_steps(steps: list[Step]) -> TensorDict:
    """Steps ``[num_envs]`` -> one TensorDict ``[num_envs, T]``, time last (torchrl's rollout layout)."""
    rollout = TensorDict(batch_size=[len(steps[0]["observation"]), len(steps)])
    for key in steps[0]:
        rollout.set(key, torch.stack([step[key] for step in steps], dim=1))
    return rollout


def _tensor(array: np.ndarray, dtype: type) -> torch.Tensor:
    """A tensor sharing ``array``'s memory when it already has ``dtype`` (``torch.as_tensor`` costs twice as much)."""
    return torch.from_numpy(np.asarray(array, dtype=dtype))


class TensorDictVectorEnv:
    """Wraps a same-step-autoreset ``gymnasium.vector.VectorEnv``; tensors live on the CPU."""

    def __init__(self, env: VectorEnv):
        if env.metadata.get("autoreset_mode") is not AutoresetMode.SAME_STEP:
            raise ValueError(f"{env} must use same-step autoreset, got {env.metadata.get('autoreset_mode')}.")
        obs_space, act_space = env.single_observation_space, env.single_action_space
        if not isinstance(obs_space, spaces.Box):
            raise ConfigError(f"Observation space {obs_space} is not supported: rlexp policies read Box observations.")
        if isinstance(act_space, spaces.Dict):
            raise ConfigError(f"Dict action space {act_space} is not supported by the trainer, whose rollouts hold "
                              "one action tensor per step: flatten it into a MultiDiscrete or Box space (the "
                              "losses take composite distributions when used as a library).")
        if isinstance(act_space, spaces.MultiDiscrete) and len(act_space.nvec.shape) != 1:
            raise ConfigError(f"MultiDiscrete action space {act_space} has nvec of shape {act_space.nvec.shape}; "
                              "rlexp's policies need a one-dimensional nvec.")
        if not isinstance(act_space, (spaces.Discrete, spaces.MultiDiscrete, spaces.Box)):
            raise ConfigError(f"Action space {act_space} is not supported: use a Discrete, MultiDiscrete or Box "
                              "action space.")
        self.env = env
        self.num_envs = env.num_envs
        self.observation_space, self.action_space = obs_space, act_space
        self.discrete = isinstance(act_space, (spaces.Discrete, spaces.MultiDiscrete))
        self._zeros = torch.zeros(self.num_envs, 1, dtype=torch.bool)
        self._episode_return = np.zeros(self.num_envs)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)
        self._finished: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def reset(self, seed: int | list[int] | None = None) -> Step:
        """Reset every sub-env; a list gives one seed per sub-env (equal seeds, equal initial states)."""
        obs, _ = self.env.reset(seed=seed)
        self._episode_return[:] = 0
        self._episode_length[:] = 0
        return self._root(obs, is_init=~self._zeros)

    def step_and_maybe_reset(self, step: Step) -> tuple[Step, Step]:
        """Step with ``step["action"]``; return ``step`` with its ``"next"`` entries and the next root."""
        obs, reward, terminated, truncated, info = self.env.step(self._env_action(step["action"]))
        done = terminated | truncated
        final_obs = obs
        if done.any():
            final_obs = obs.copy()
            final_obs[done] = np.stack(info["final_obs"][done])
        self._track_episodes(reward, done, truncated)
        step["next", "observation"] = _tensor(final_obs, np.float32)
        step["next", "reward"] = _tensor(reward[:, None], np.float32)
        step["next", "done"] = torch.from_numpy(done[:, None])
        step["next", "terminated"] = torch.from_numpy(terminated[:, None])
        step["next", "truncated"] = torch.from_numpy(truncated[:, None])
        return step, self._root(obs, is_init=step["next", "done"])

    def pop_finished_episodes(self) -> dict[str, np.ndarray]:
        """Return, length and truncation flag of every episode finished since the last call."""
        parts = self._finished or [(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool))]
        self._finished = []
        returns, lengths, truncated = (np.concatenate(x) for x in zip(*parts))
        return {"return": returns, "length": lengths, "truncated": truncated}

    def state_dict(self) -> dict:
        """Everything that decides the next steps, pickled: sub-env states, their RNGs, the episode trackers.

        Taken from the innermost vector env's attributes (minus the env factories, which are local
        functions); the wrappers rlexp puts around it hold no state. ``"vector_env"`` is None for an
        env that cannot be pickled: such a run resumes with freshly seeded envs (not bit-identical).
        """
        inner = {key: value for key, value in vars(self.env.unwrapped).items() if key != "env_fns"}
        try:
            vector_env = pickle.dumps(inner)
        except (pickle.PicklingError, TypeError, AttributeError) as err:
            warnings.warn(f"{self.env} cannot be pickled ({err}); checkpoints hold no env state, and a resumed "
                          "run restarts its envs from fresh seeds.", stacklevel=2)
            vector_env = None
        return {"vector_env": vector_env, "episode_return": self._episode_return.copy(),
                "episode_length": self._episode_length.copy(), "finished": list(self._finished)}

    def load_state_dict(self, state: dict) -> bool:
        """Restore ``state_dict()``'s output; False if it holds no env state (the env is left as it is)."""
        self._episode_return[:], self._episode_length[:] = state["episode_return"], state["episode_length"]
        self._finished = list(state["finished"])
        if state["vector_env"] is None:
            return False
        vars(self.env.unwrapped).update(pickle.loads(state["vector_env"]))
        return True

    def close(self) -> None:
        self.env.close()

    def _root(self, obs: np.ndarray, is_init: torch.Tensor) -> Step:
        zeros = self._zeros  # never written to in place: stacking copies
        return {"observation": _tensor(obs, np.float32), "done": zeros, "terminated": zeros,
                "truncated": zeros, "is_init": is_init}

    def _env_action(self, action: torch.Tensor) -> np.ndarray:
        action = action.detach().cpu().numpy()
        if isinstance(self.action_space, spaces.MultiDiscrete):
            return action + self.action_space.start  # the policy picks indices 0..nvec-1 per dimension
        if self.discrete:
            return action
        # The policy's unbounded sample is stored; only the env sees it clipped to the bounds.
        return np.clip(action, self.action_space.low, self.action_space.high)

    def _track_episodes(self, reward: np.ndarray, done: np.ndarray, truncated: np.ndarray) -> None:
        self._episode_return += reward
        self._episode_length += 1
        if done.any():
            self._finished.append((self._episode_return[done].copy(), self._episode_length[done].copy(),
                                   truncated[done].copy()))
            self._episode_return[done] = 0
            self._episode_length[done] = 0
