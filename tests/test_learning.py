"""ClipPPO learns CartPole with rlexp's defaults on a small budget (well under two minutes on 2 cores)."""

from support import compose_config
from rlexp.loggers import Logger
from rlexp.trainer import train


def test_clip_ppo_reaches_200_on_cartpole(tmp_path):
    cfg = compose_config("logger=none", "collector.total_frames=81920", "eval.interval=1000000", "seed=0")
    result = train(cfg, tmp_path, make_logger=Logger)
    assert result["eval/episode_return"] >= 200, result
    assert (tmp_path / "checkpoint.pt").exists()
