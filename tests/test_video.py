"""Evaluation videos (``eval.video=true``): MP4 files that decode to the evaluated episode, W&B, no changed number."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import imageio.v2 as imageio
import pytest
import torch

import video_envs  # noqa: F401  (registers the envs that cannot give videos)
from support import cli_env, compose_config, read_wandb_run, resume_cli, run_cli
from rlexp.checkpoint import load_checkpoint, save_checkpoint
from rlexp.loggers import Logger
from rlexp.registry import ConfigError
from rlexp.trainer import train

TIMING = {"train/fps", "train/seconds"}


class Records(Logger):
    """Keeps what the trainer logs: metric rows without timings, and the videos as (key, file name, step)."""

    def __init__(self):
        self.rows, self.videos = [], []

    def log(self, metrics, step):
        self.rows.append({"frames": step} | {k: v for k, v in metrics.items() if k not in TIMING and not k.startswith("train/time_")})

    def log_video(self, key, path, step):
        assert path.is_file()
        self.videos.append((key, path.name, step))


def decoded(path: Path) -> tuple[int, tuple[int, ...], float]:
    """Frame count, frame shape and frame rate of an MP4, decoded with imageio's ffmpeg reader."""
    reader = imageio.get_reader(path, format="FFMPEG")
    frames = [frame for frame in reader]
    fps = reader.get_meta_data()["fps"]
    reader.close()
    assert len({frame.shape for frame in frames}) == 1
    return len(frames), frames[0].shape, fps


def eval_lengths(run_dir: Path) -> dict[int, int]:
    """``eval/episode_length`` by frames from ``metrics.jsonl`` (with ``eval.episodes=1``: the recorded episode)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["frames"]: row["eval/episode_length"] for row in rows if "eval/episode_length" in row}


@pytest.mark.e2e
def test_short_run_records_the_first_evaluation_episode_as_mp4_and_in_wandb(run_dir):
    # 4 evaluations (1024 ... 4096 frames); video_every=2 records the 1st, the 3rd and the final one.
    result = run_cli(run_dir, "collector.total_frames=4096", "collector.frames_per_batch=1024", "env.num_envs=4",
                     "eval.interval=1024", "eval.episodes=1", "eval.video=true", "eval.video_every=2")
    assert result.returncode == 0, result.stderr
    assert "XDG_RUNTIME_DIR" not in result.stderr  # pygame draws off-screen, without SDL's display errors
    steps = [1024, 3072, 4096]
    videos = run_dir / "videos"
    assert sorted(p.name for p in videos.iterdir()) == [f"eval_{step:012d}.mp4" for step in steps]  # no partial file
    lengths = eval_lengths(run_dir)
    for step in steps:
        # one frame per step of the episode (the state acted in), at CartPole's size and frame rate
        assert decoded(videos / f"eval_{step:012d}.mp4") == (lengths[step], (400, 600, 3), 50.0)

    records = read_wandb_run(run_dir)
    history = {r["history"]["item"]["frames"]: r["history"]["item"] for r in records if r["type"] == "history"}
    assert [frames for frames, item in history.items() if "eval/video.path" in item] == steps
    (offline_run,) = run_dir.glob("wandb/offline-run-*")
    for step in steps:
        item = history[step]
        assert item["eval/video._type"] == "video-file" and item["eval/episode_length"] == lengths[step]
        local = (videos / f"eval_{step:012d}.mp4").read_bytes()
        assert item["eval/video.sha256"] == hashlib.sha256(local).hexdigest()
        assert (offline_run / "files" / item["eval/video.path"]).read_bytes() == local


def test_recording_changes_no_training_or_evaluation_number(tmp_path):
    # Pendulum: a SyncVectorEnv whose sub-env 0 draws with pygame; 3 evaluation episodes, sub-env 0's recorded.
    small = ["env=pendulum", "logger=none", "collector.total_frames=4096", "collector.frames_per_batch=1024",
             "env.num_envs=4", "eval.interval=1024", "eval.episodes=3"]
    plain, recorded = Records(), Records()
    (tmp_path / "plain").mkdir(), (tmp_path / "video").mkdir()
    train(compose_config(*small), tmp_path / "plain", make_logger=lambda: plain)
    train(compose_config(*small, "eval.video=true", "eval.video_every=2"), tmp_path / "video",
          make_logger=lambda: recorded)

    assert recorded.rows == plain.rows and len(plain.rows) == 4 and "eval/episode_return" in plain.rows[0]
    steps = [1024, 3072, 4096]
    assert recorded.videos == [("eval/video", f"eval_{step:012d}.mp4", step) for step in steps]
    for step in steps:  # Pendulum episodes end at its 200-step time limit
        assert decoded(tmp_path / "video" / "videos" / f"eval_{step:012d}.mp4") == (200, (500, 500, 3), 30.0)
    assert not (tmp_path / "plain" / "videos").exists()

    plain_state = torch.load(tmp_path / "plain" / "checkpoint.pt", weights_only=False)
    video_state = torch.load(tmp_path / "video" / "checkpoint.pt", weights_only=False)
    for part in ("actor", "critic", "loss"):
        torch.testing.assert_close(video_state[part], plain_state[part], rtol=0, atol=0)
    # the evaluation env still pickles (its drawing surfaces are left out), so resuming stays exact
    assert video_state["eval_env"]["vector_env"] is not None


@pytest.mark.e2e
def test_videos_may_be_switched_on_when_resuming_a_checkpoint_from_before_they_existed(run_dir):
    run_dir.mkdir()
    train(compose_config("logger=csv", "collector.total_frames=2048", "collector.frames_per_batch=1024",
                         "env.num_envs=4", "eval.interval=1024", "eval.episodes=1"), run_dir, make_logger=Logger)
    state = load_checkpoint(run_dir / "checkpoint.pt")
    del state["config"]["eval"]["video"], state["config"]["eval"]["video_every"]  # as written before videos
    save_checkpoint(state, run_dir / "checkpoint.pt")

    result = resume_cli(run_dir, "collector.total_frames=3072")
    assert result.returncode == 0, result.stderr
    assert not (run_dir / "videos").exists()
    result = resume_cli(run_dir, "collector.total_frames=4096", "eval.video=true", "eval.video_every=1")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in (run_dir / "videos").iterdir()] == ["eval_000000004096.mp4"]


@pytest.mark.e2e
def test_evaluate_writes_one_video_for_a_checkpoint(tmp_path):
    train(compose_config("logger=none", "collector.total_frames=2048", "collector.frames_per_batch=1024",
                         "env.num_envs=4", "eval.episodes=1"), tmp_path, make_logger=Logger)
    result = subprocess.run([sys.executable, "-m", "rlexp.evaluate", str(tmp_path), "episodes=1", "seed=5",
                             "video=true"], capture_output=True, text=True, env=cli_env(tmp_path), timeout=300)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "videos" / "evaluate_000000002048_seed5.mp4"
    assert f"video: {path}" in result.stdout
    episode_return = float(result.stdout.split("mean return: ")[1].split()[0])
    assert decoded(path) == (episode_return, (400, 600, 3), 50.0)  # CartPole: reward 1 per step

    bad = subprocess.run([sys.executable, "-m", "rlexp.evaluate", str(tmp_path), "video=yes"], capture_output=True,
                         text=True, env=cli_env(tmp_path), timeout=300)
    assert bad.returncode == 2 and "video='yes'; choose one of: true, false" in bad.stderr


@pytest.mark.parametrize("overrides, says", [
    (["env=gym", "env.id=AnsiOnly-v0"], "env.id='AnsiOnly-v0' renders only ansi."),
    (["env.name=fixed_cartpole", "~env.id"], "the builder of env='fixed_cartpole' takes no render_mode option"),
    (["env.name=cartpole_ignoring_render_mode", "~env.id"],
     "env='cartpole_ignoring_render_mode' was built with render_mode=None"),
])
def test_an_env_that_cannot_render_is_refused_before_training(overrides, says, tmp_path):
    def logger_must_not_open():
        raise AssertionError("the run started")

    with pytest.raises(ConfigError, match="eval.video=true needs rgb_array frames") as err:
        train(compose_config("eval.video=true", "imports=[video_envs]", *overrides), tmp_path,
              make_logger=logger_must_not_open)
    assert says in str(err.value) and "eval.video=false" in str(err.value)


def test_missing_video_packages_are_named_before_training(monkeypatch, tmp_path):
    import rlexp.video

    monkeypatch.setattr(rlexp.video, "find_spec", lambda name: None if name in ("pygame", "imageio_ffmpeg") else True)
    with pytest.raises(ConfigError, match=r"eval.video=true needs imageio-ffmpeg, pygame, not installed here: "
                                          r"pip install -e '.\[video\]'"):
        train(compose_config("eval.video=true", "env=pendulum"), tmp_path, make_logger=Logger)


@pytest.mark.e2e
def test_without_video_nothing_for_it_is_imported(tmp_path):
    script = f"""
import sys
from pathlib import Path
from support import compose_config
from rlexp.loggers import Logger
from rlexp.trainer import train
train(compose_config("logger=none", "collector.total_frames=1024", "collector.frames_per_batch=1024",
                     "eval.episodes=2"), Path({str(tmp_path)!r}), make_logger=Logger)
print(sorted(module for module in ("imageio", "imageio_ffmpeg", "pygame") if module in sys.modules))
"""
    tests = Path(__file__).parent
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env=cli_env(tmp_path, pythonpath=tests), cwd=tests.parent)  # cwd: this checkout's rlexp
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "[]"


@pytest.mark.e2e
def test_mujoco_records_headless_with_the_default_gl_backend(run_dir):
    pytest.importorskip("mujoco")  # not an rlexp dependency
    env = {k: v for k, v in cli_env(run_dir.parent).items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM", "DISPLAY")}
    result = subprocess.run(
        [sys.executable, "-m", "rlexp", f"hydra.run.dir={run_dir}", "logger=csv", "env=gym", "env.id=Hopper-v5",
         "+env.kwargs.width=96", "+env.kwargs.height=64", "env.num_envs=2", "collector.total_frames=512",
         "collector.frames_per_batch=512", "eval.episodes=1", "eval.video=true"],
        capture_output=True, text=True, env=env, cwd=run_dir.parent, timeout=600)
    assert result.returncode == 0, result.stderr
    (length,) = eval_lengths(run_dir).values()
    assert decoded(run_dir / "videos" / "eval_000000000512.mp4")[:2] == (length, (64, 96, 3))
