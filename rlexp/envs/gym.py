"""The ``gym`` entry of the env registry: any registered gymnasium id as a vectorised env."""

from __future__ import annotations

import difflib

import gymnasium as gym
from gymnasium.vector import AutoresetMode

from rlexp.envs.same_step import CartPoleSameStepReset
from rlexp.envs.select_observation import SelectObservation
from rlexp.envs.tensordict_env import TensorDictVectorEnv
from rlexp.registry import ConfigError, envs


VECTORIZATION = ("sync", "async")
# Optional gymnasium dependencies by the module path of an env's entry point, with what installs them.
EXTRAS = {"gymnasium.envs.mujoco": "pip install -e '.[mujoco]' (gymnasium[mujoco])",
          "gymnasium.envs.box2d": "pip install swig && pip install 'gymnasium[box2d]'"}


@envs.register("gym")
def make_gym_env(*, id: str, num_envs: int = 8, max_episode_steps: int | None = None,
                 kwargs: dict | None = None, observation_indices: list[int] | None = None,
                 observation_scale: list[float] | None = None, vectorization: str = "sync",
                 render_mode: str | None = None) -> TensorDictVectorEnv:
    """``num_envs`` copies of gymnasium env ``id``, numpy-vectorised where the env has such an entry point.

    ``kwargs`` go to the env constructor. ``observation_indices`` keeps only those entries of a
    flat observation (a partially observed task); ``observation_scale`` multiplies the kept entries
    (one positive factor each). ``vectorization``: ``sync`` steps the copies one after another in
    this process; ``async`` in one subprocess each (gymnasium's ``AsyncVectorEnv``), whose state a
    checkpoint cannot hold. ``render_mode`` is gymnasium's, for every sub-env (``rgb_array``:
    evaluation videos; rendering is on demand, so it costs nothing until a frame is drawn).
    Environments always step on the CPU.
    """
    try:
        spec = gym.spec(id)
    except gym.error.Error as err:
        close = difflib.get_close_matches(id, list(gym.registry), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(f"env.id={id!r} is not a registered gymnasium environment ({err}).{hint}") from None
    if num_envs < 1:
        raise ConfigError(f"env.num_envs must be >= 1, got {num_envs}.")
    if vectorization not in VECTORIZATION:
        raise ConfigError(f"env.vectorization={vectorization!r}; choose one of: {', '.join(VECTORIZATION)}.")
    kwargs = dict(kwargs or {})
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        if vectorization == "sync" and \
                spec.vector_entry_point == "gymnasium.envs.classic_control.cartpole:CartPoleVectorEnv":
            env = CartPoleSameStepReset(gym.make_vec(id, num_envs, vectorization_mode="vector_entry_point", **kwargs))
        else:
            env = gym.make_vec(id, num_envs, vectorization_mode=vectorization,
                               vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP}, **kwargs)
    except gym.error.DependencyNotInstalled as err:
        entry = str(spec.entry_point)
        install = next((how for module, how in EXTRAS.items() if entry.startswith(module)), None)
        raise ConfigError(f"env.id={id} needs a package that is not installed ({err}). "
                          f"Install it with: {install or 'the command above'}") from None
    if observation_indices is not None or observation_scale is not None:
        try:
            env = SelectObservation(env, observation_indices, observation_scale)
        except ValueError as err:
            env.close()
            raise ConfigError(f"env.observation_indices / env.observation_scale: {err}") from None
    return TensorDictVectorEnv(env, name=id, max_episode_steps=max_episode_steps or spec.max_episode_steps)
