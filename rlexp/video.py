"""Evaluation videos: the first episode of an evaluation as an MP4 in ``<run>/videos/`` and in W&B.

With ``eval.video=true`` the evaluation env is built with ``render_mode="rgb_array"``, and every
``eval.video_every``-th evaluation (the first one included) and the final one record sub-env 0's
episode while ``rlexp.collector.evaluate`` runs it. The recorded episode is one of the evaluated
ones, through the same env and policy, so whatever evaluation does (deterministic actions, any
observation processing) the video shows. Rendering reads the env's state and draws no random
numbers, so recording changes no training or evaluation number; with ``eval.video=false`` nothing
here runs. Frames go to imageio's ffmpeg writer (H.264, the binary from the imageio-ffmpeg wheel)
one at a time, so an episode is never held in memory.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv, CartPoleVectorEnv
from gymnasium.envs.registration import load_env_creator
from gymnasium.vector import SyncVectorEnv, VectorEnv

from rlexp.envs import Step, TensorDictVectorEnv
from rlexp.registry import ConfigError, envs

VIDEO_DIR = "videos"
VIDEO_KEY = "eval/video"  # the W&B key of the videos, logged at step = frames
DEFAULT_FPS = 30  # for envs whose metadata gives no render_fps
PYGAME_DRAWN = ("gymnasium.envs.classic_control", "gymnasium.envs.toy_text", "gymnasium.envs.box2d")


def render_options(env: Mapping) -> dict[str, str]:
    """The extra env-builder option that makes the evaluation env render: ``render_mode="rgb_array"``.

    Raises ConfigError, naming the env, when it cannot render ``rgb_array`` frames. Without a
    display it also picks off-screen drawing where the user chose nothing: MuJoCo's EGL backend
    (``MUJOCO_GL``; unset, gymnasium tries GLFW first, which needs a display) and SDL's dummy video
    driver for pygame's classic-control drawing (``SDL_VIDEODRIVER``; else SDL prints display errors).
    """
    if env["name"] == "gym":
        modes = gym_render_modes(env["id"])
        if modes is not None and "rgb_array" not in modes:
            raise ConfigError(f"eval.video=true needs rgb_array frames, and {env_label(env)} renders only "
                              f"{', '.join(modes) or 'nothing'}. Choose an env that renders rgb_array or set "
                              "eval.video=false.")
    else:
        params = inspect.signature(envs.get(env["name"])).parameters.values()
        if not any(p.name == "render_mode" or p.kind is p.VAR_KEYWORD for p in params):
            raise ConfigError(f"eval.video=true needs rgb_array frames, and the builder of {env_label(env)} takes "
                              "no render_mode option. Give it one (passed on to gymnasium.make_vec) or set "
                              "eval.video=false.")
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("MUJOCO_GL", "egl")
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    return {"render_mode": "rgb_array"}


def gym_render_modes(env_id: str) -> list[str] | None:
    """The render modes gymnasium env ``env_id`` declares, None if unknown (the env build reports a bad id)."""
    try:
        spec = gym.spec(env_id)
        creator = load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str) else spec.entry_point
    except (gym.error.Error, ImportError):
        return None
    metadata = getattr(creator, "metadata", None)
    return None if metadata is None else list(metadata.get("render_modes", []))


def env_label(env: Mapping) -> str:
    return f"env.id={env['id']!r}" if env["name"] == "gym" else f"env={env['name']!r}"


class VideoRecorder:
    """Chooses the recorded evaluations and hands out the env that records them.

    Evaluation number ``k`` (counted from 1) is recorded when ``(k - 1) % every == 0``, and the
    final evaluation always is.
    """

    def __init__(self, eval_env: TensorDictVectorEnv, env_config: Mapping, folder: Path, every: int = 1):
        if eval_env.env.render_mode != "rgb_array":
            raise ConfigError(f"eval.video=true needs rgb_array frames, and {env_label(env_config)} was built with "
                              f"render_mode={eval_env.env.render_mode!r}: its builder must pass render_mode on to "
                              "the env. Fix the builder or set eval.video=false.")
        missing = missing_packages(eval_env.env)
        if missing:
            raise ConfigError(f"eval.video=true needs {', '.join(missing)}, not installed here: pip install -e "
                              f"'.[video]' (or pip install {' '.join(missing)}), or set eval.video=false.")
        self.env, self.folder, self.every = eval_env, Path(folder), every

    def recording(self, evaluation: int, frames: int, final: bool) -> RecordingEnv | None:
        """The env to evaluate through if evaluation number ``evaluation`` at ``frames`` is recorded, else None."""
        if final or (evaluation - 1) % self.every == 0:
            return self.record(f"eval_{frames:012d}")
        return None

    def record(self, name: str) -> RecordingEnv:
        """The env that records the next evaluation's first episode as ``<folder>/<name>.mp4``."""
        return RecordingEnv(self.env, self.folder / f"{name}.mp4")


def missing_packages(env: VectorEnv) -> list[str]:
    """What recording ``env`` needs and is not installed: imageio, imageio-ffmpeg, and pygame for the
    gymnasium envs that draw with it (checked before training, not at the first recorded evaluation)."""
    inner = env.unwrapped
    drawn = inner.envs[0].unwrapped if isinstance(inner, SyncVectorEnv) else inner
    needed = {"imageio": "imageio", "imageio_ffmpeg": "imageio-ffmpeg"}
    if type(drawn).__module__.startswith(PYGAME_DRAWN):
        needed["pygame"] = "pygame"
    return [package for module, package in needed.items() if find_spec(module) is None]


class RecordingEnv:
    """The evaluation env for one ``evaluate`` call, writing sub-env 0's episode after the reset to ``path``.

    Frame ``t`` shows the state the agent acts in at step ``t``, so an episode of ``T`` steps gives
    ``T`` frames (its final state is never drawn: same-step autoreset has already replaced it by the
    next episode's first state). The file is written under a hidden name and appears as ``path``
    only when the episode is complete. Everything else is the wrapped env's.
    """

    def __init__(self, env: TensorDictVectorEnv, path: Path):
        self.env, self.path = env, Path(path)
        self._partial = self.path.with_name(f".{self.path.name}")  # ends in .mp4: ffmpeg picks the container by it
        self._writer = self._frames = None

    def __getattr__(self, name: str):
        return getattr(self.env, name)

    def reset(self, seed: int | list[int] | None = None) -> Step:
        root = self.env.reset(seed=seed)
        import imageio.v2 as imageio  # imported here: runs without videos never load it

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fps = self.env.env.metadata.get("render_fps") or DEFAULT_FPS
        # macro_block_size=2: H.264's yuv420p needs even sides; imageio's default of 16 would rescale
        # CartPole's 600x400 frames.
        self._writer = imageio.get_writer(self._partial, format="FFMPEG", fps=fps, macro_block_size=2)
        self._frames = FirstEnvFrames(self.env.env)
        self._writer.append_data(self._frames())
        return root

    def step_and_maybe_reset(self, step: Step) -> tuple[Step, Step]:
        step, root = self.env.step_and_maybe_reset(step)
        if self._writer is not None:
            if step["next", "done"][0]:
                self._finish()
            else:
                self._writer.append_data(self._frames())
        return step, root

    def _finish(self) -> None:
        self._writer.close()
        self._frames.close()
        self._writer = self._frames = None
        os.replace(self._partial, self.path)


class FirstEnvFrames:
    """Draws sub-env 0 of a vector env as an ``rgb_array`` frame, and only that one.

    A vector env's ``render()`` draws every sub-env, all of them for each frame; a
    ``SyncVectorEnv``'s sub-envs render alone, and gymnasium's numpy CartPole is drawn by its
    single-env twin set to sub-env 0's state (the same picture: same geometry and drawing code).
    """

    def __init__(self, env: VectorEnv):
        self.env, self.inner = env, env.unwrapped
        self._cartpole = CartPoleEnv(render_mode="rgb_array") if isinstance(self.inner, CartPoleVectorEnv) else None

    def __call__(self) -> np.ndarray:
        if isinstance(self.inner, SyncVectorEnv):
            return self.inner.envs[0].render()
        if self._cartpole is not None:
            self._cartpole.state = self.inner.state[:, 0]
            return self._cartpole.render()
        return self.env.render()[0]

    def close(self) -> None:
        if self._cartpole is not None:
            self._cartpole.close()
