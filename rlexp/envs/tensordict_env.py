"""A gymnasium vector env that speaks tensordict's keys and torchrl's layout, one step at a time.

Each step yields a flat dict of ``[num_envs, ...]`` tensors keyed by tensordict keys: root
``observation, action, done, terminated, truncated, is_init`` (plus whatever the policy wrote) and
``("next", observation | reward | done | terminated | truncated)``; ``stack_steps`` turns a list of
them into the ``[num_envs, T]`` rollout TensorDict (plain dicts, because building TensorDicts per
step costs several times more than stepping CartPole). ``("next", "observation")`` is always the
observation the action led to, also when the episode ended: a truncated episode bootstraps from its
true final observation, never from the first observation of the next episode, which only appears as
the next root observation (with ``is_init`` set).

With a ``Normalizer`` attached (``env.normalize``), observations and rewards are normalised as they
enter; the episode returns it reports (``pop_finished_episodes``) stay raw env returns.
"""

from __future__ import annotations

import io
import pickle
import warnings

import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from tensordict import NestedKey, TensorDict

from rlexp.envs.normalize import Normalizer
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


class WithoutDrawing(pickle.Pickler):
    """Pickles pygame objects as None: the surfaces and clocks that classic-control envs draw with
    (evaluation videos) are not env state, cannot be pickled, and ``render()`` re-creates them."""

    def reducer_override(self, obj):
        return (type(None), ()) if type(obj).__module__.startswith("pygame") else NotImplemented


def _simulators(vector_env: VectorEnv) -> list:
    """The MuJoCo sub-envs of a sync vector env (those with a ``model`` and ``data``), else []."""
    subs = [env.unwrapped for env in getattr(vector_env, "envs", ())]
    return subs if subs and all(hasattr(env, "model") and hasattr(env, "data") for env in subs) else []


def simulator_states(vector_env: VectorEnv) -> list[dict] | None:
    """Each MuJoCo sub-env's full integration state and RNG; None for other envs.

    gymnasium's MuJoCo envs pickle as their constructor arguments (``EzPickle``): unpickled, they
    start a fresh simulation and RNG. So checkpoints carry the state as MuJoCo's own
    ``mj_getState`` reads it (time, positions, velocities, actuation, warm start, ...) and the
    generator state of the env's ``np_random``, which draws the reset noise.
    """
    sims = _simulators(vector_env)
    if not sims:
        return None
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    states = []
    for sim in sims:
        physics = np.empty(mujoco.mj_stateSize(sim.model, spec))
        mujoco.mj_getState(sim.model, sim.data, physics, spec)
        states.append({"physics": physics, "rng": sim.np_random.bit_generator.state})
    return states


def set_simulator_states(vector_env: VectorEnv, states: list[dict] | None) -> None:
    if states is None:
        return
    import mujoco

    for sim, state in zip(_simulators(vector_env), states, strict=True):
        mujoco.mj_setState(sim.model, sim.data, state["physics"], mujoco.mjtState.mjSTATE_INTEGRATION)
        sim.np_random.bit_generator.state = state["rng"]


class EnvFault(FloatingPointError):
    """An env returned a non-finite observation or reward: training stops where it entered."""


class TensorDictVectorEnv:
    """Wraps a same-step-autoreset ``gymnasium.vector.VectorEnv``; tensors live on the CPU.

    Box observations and actions with more than one dimension are flattened for the policy
    (``observation_space``/``action_space`` are the flat Boxes) and actions reshaped for the env.
    Every step checks that the env's observations have the shape of its space and that they and the
    rewards are finite, and names the env, the entry and the step otherwise. ``max_episode_steps``
    is the env's time limit (None: none known).
    """

    def __init__(self, env: VectorEnv, name: str | None = None, max_episode_steps: int | None = None):
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
        self.name = name or getattr(env.spec, "id", None) or type(env.unwrapped).__name__
        self.max_episode_steps = max_episode_steps or getattr(env.spec, "max_episode_steps", None)
        self.num_envs = env.num_envs
        self.observation_shape = (self.num_envs, *obs_space.shape)
        self.observation_space = spaces.flatten_space(obs_space) if len(obs_space.shape) > 1 else obs_space
        self.action_space = spaces.flatten_space(act_space) if isinstance(act_space, spaces.Box) and \
            len(act_space.shape) > 1 else act_space
        self._env_action_shape = (self.num_envs, *act_space.shape)
        self.discrete = isinstance(act_space, (spaces.Discrete, spaces.MultiDiscrete))
        self.steps = 0  # vector steps since construction, named in fault messages
        self._zeros = torch.zeros(self.num_envs, 1, dtype=torch.bool)
        self._episode_return = np.zeros(self.num_envs)
        self._episode_length = np.zeros(self.num_envs, dtype=np.int64)
        self._finished: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.normalizer: Normalizer | None = None

    def reset(self, seed: int | list[int] | None = None) -> Step:
        """Reset every sub-env; a list gives one seed per sub-env (equal seeds, equal initial states)."""
        obs, _ = self.env.reset(seed=seed)
        obs = self._checked("observation", obs, "reset")
        self._episode_return[:] = 0
        self._episode_length[:] = 0
        if self.normalizer is not None:
            self.normalizer.reset_returns()
            (obs,) = self.normalizer.observations(obs)
        return self._root(obs, is_init=~self._zeros)

    def step_and_maybe_reset(self, step: Step) -> tuple[Step, Step]:
        """Step with ``step["action"]``; return ``step`` with its ``"next"`` entries and the next root."""
        self.steps += 1
        try:
            obs, reward, terminated, truncated, info = self.env.step(self._env_action(step["action"]))
        except ValueError as err:  # gymnasium's vector env fails to stack a misshapen observation
            self._raise_if_misshapen(err)
            raise
        obs = self._checked("observation", obs, f"step {self.steps}")
        reward = self._checked("reward", reward, f"step {self.steps}")
        done = terminated | truncated
        final_obs = obs
        if done.any():
            final_obs = obs.copy()
            final_obs[done] = self._checked("final observation", np.stack(info["final_obs"][done]),
                                            f"step {self.steps}")
        self._track_episodes(reward, done, truncated)  # raw rewards: reported returns are the env's own
        if self.normalizer is not None:
            if final_obs is obs:
                obs = final_obs = self.normalizer.observations(obs)[0]
            else:
                obs, final_obs = self.normalizer.observations(obs, final_obs)
            reward = self.normalizer.rewards(reward, done)
        step["next", "observation"] = _tensor(final_obs, np.float32)
        step["next", "reward"] = _tensor(reward[:, None], np.float32)
        step["next", "done"] = torch.from_numpy(done[:, None])
        step["next", "terminated"] = torch.from_numpy(terminated[:, None])
        step["next", "truncated"] = torch.from_numpy(truncated[:, None])
        return step, self._root(obs, is_init=step["next", "done"])

    def pop_finished_episodes(self) -> dict[str, np.ndarray]:
        """Return, length, truncation flag and sub-env index of every episode finished since the last call."""
        parts = self._finished or [(np.zeros(0), np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool),
                                    np.zeros(0, dtype=np.int64))]
        self._finished = []
        returns, lengths, truncated, envs = (np.concatenate(x) for x in zip(*parts))
        return {"return": returns, "length": lengths, "truncated": truncated, "env": envs}

    def freeze_statistics(self, normalizer: Normalizer | None) -> None:
        """Normalise observations with a frozen copy of ``normalizer``'s current statistics (evaluation envs)."""
        self.normalizer = normalizer.frozen_copy(self.num_envs) if normalizer is not None else None

    def state_dict(self) -> dict:
        """Everything that decides the next steps, pickled: sub-env states, their RNGs, the episode trackers
        and the normalisation statistics.

        Taken from the innermost vector env's attributes (minus the env factories, which are local
        functions); the wrappers rlexp puts around it hold no state. ``"vector_env"`` is None for an
        env that cannot be pickled: such a run resumes with freshly seeded envs (not bit-identical).
        """
        inner = {key: value for key, value in vars(self.env.unwrapped).items() if key != "env_fns"}
        try:
            buffer = io.BytesIO()
            WithoutDrawing(buffer).dump(inner)
            vector_env = buffer.getvalue()
        except Exception as err:  # noqa: BLE001  (simulator bindings raise anything: ValueError, RuntimeError, ...)
            warnings.warn(f"{self.env} cannot be pickled ({err}); checkpoints hold no env state, and a resumed "
                          "run restarts its envs from fresh seeds.", stacklevel=2)
            vector_env = None
        return {"vector_env": vector_env, "simulators": simulator_states(self.env.unwrapped),
                "episode_return": self._episode_return.copy(),
                "episode_length": self._episode_length.copy(), "finished": list(self._finished),
                "normalizer": self.normalizer.state_dict() if self.normalizer is not None else None}

    def load_state_dict(self, state: dict) -> bool:
        """Restore ``state_dict()``'s output; False if it holds no env state (the env is left as it is)."""
        self._episode_return[:], self._episode_length[:] = state["episode_return"], state["episode_length"]
        # (a checkpoint of an earlier rlexp holds no sub-env index: -1)
        self._finished = [part if len(part) == 4 else (*part, np.full(len(part[0]), -1)) for part in state["finished"]]
        if self.normalizer is not None:
            self.normalizer.load_state_dict(state.get("normalizer"))
        if state["vector_env"] is None:
            return False
        vars(self.env.unwrapped).update(pickle.loads(state["vector_env"]))
        set_simulator_states(self.env.unwrapped, state.get("simulators"))
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
        action = np.clip(action, self.action_space.low, self.action_space.high)
        return action.reshape(self._env_action_shape)

    def _raise_if_misshapen(self, err: ValueError) -> None:
        """Name the env and the shapes when a sub-env's last observation does not fit the space."""
        shapes = [np.shape(obs) for obs in getattr(self.env.unwrapped, "_env_obs", None) or ()]
        wrong = {i: shape for i, shape in enumerate(shapes) if shape != self.observation_shape[1:]}
        if wrong:
            raise ConfigError(f"env {self.name} returned observations of shape {sorted(set(wrong.values()))} at step "
                              f"{self.steps} (sub-envs {sorted(wrong)}); its observation space expects "
                              f"{self.observation_shape[1:]} ({err}).") from None

    def _checked(self, entry: str, values: np.ndarray, when: str) -> np.ndarray:
        """Observations as ``[rows, flat]`` (rewards as they are), refused if misshapen or not finite."""
        values = np.asarray(values)
        if entry != "reward":
            expected = (self.num_envs if entry == "observation" else len(values), *self.observation_shape[1:])
            if values.shape != expected:
                raise ConfigError(f"env {self.name} returned {entry}s of shape {values.shape} at {when}; its "
                                  f"observation space expects {expected} (num_envs={self.num_envs}).")
            values = values.reshape(expected[0], -1)
        if not np.isfinite(values).all():
            row = int(np.flatnonzero(~np.isfinite(values.reshape(len(values), -1)).all(-1))[0])
            raise EnvFault(f"env {self.name} returned a non-finite {entry} at {when} (sub-env {row}: "
                           f"{values[row].tolist()}). Training stops here: an update cannot repair the env's output "
                           "(trainer.on_nan=skip covers the loss and gradients only).")
        return values

    def _track_episodes(self, reward: np.ndarray, done: np.ndarray, truncated: np.ndarray) -> None:
        self._episode_return += reward
        self._episode_length += 1
        if done.any():
            self._finished.append((self._episode_return[done].copy(), self._episode_length[done].copy(),
                                   truncated[done].copy(), np.flatnonzero(done)))
            self._episode_return[done] = 0
            self._episode_length[done] = 0
