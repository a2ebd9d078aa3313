"""Every row of README's "Bad input" table: the command fails before training with the message quoted there."""

import re
import shlex
from pathlib import Path

import pytest
from omegaconf import open_dict

from support import ROOT, compose_config
from rlexp.__main__ import run
from rlexp.loggers import Logger
from rlexp.registry import ConfigError
from rlexp.trainer import train

ROW = re.compile(r"^\| (?P<input>[^|]+) \| `python -m rlexp (?P<args>[^`]+)` \| (?P<says>.+) \|$")


def readme_rows() -> list[tuple[str, list[str], list[str]]]:
    text = (ROOT / "README.md").read_text()
    table = text.partition("### Bad input")[2].split("\n#", 1)[0]
    rows = [ROW.match(line) for line in table.splitlines()]
    return [(row["input"], shlex.split(row["args"]), re.findall(r"`([^`]+)`", row["says"])) for row in rows if row]


def reported_error(overrides: list[str], run_dir: Path) -> str:
    """What ``python -m rlexp <overrides>`` reports, run in-process: Hydra's message or rlexp's ConfigError."""
    try:
        cfg = compose_config(*overrides, hydra=True)
    except Exception as err:  # noqa: BLE001  (Hydra prints the exception and its cause)
        return f"{err}\n{err.__cause__}"
    with open_dict(cfg):
        hydra_cfg = cfg.pop("hydra")
    # the job's folder: the command's own hydra.run.dir, else a fresh one
    given = any(override.startswith("hydra.run.dir=") for override in overrides)
    hydra_cfg.runtime.output_dir = hydra_cfg.run.dir if given else str(run_dir)
    run_dir.mkdir(exist_ok=True)
    with pytest.raises(ConfigError) as err:
        run(cfg, hydra_cfg)
    return str(err.value)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("run")
    train(compose_config("logger=none", "collector.total_frames=2048", "collector.frames_per_batch=1024",
                         "env.num_envs=4", "eval.episodes=2"), folder, make_logger=Logger)
    return folder


def test_the_table_lists_every_kind_of_bad_input():
    inputs = " ".join(row[0] for row in readme_rows())
    for kind in ["group option", "key in a group", "type", "range", "divisible", "num_envs", "env id",
                 "action space", "CUDA", "does not exist", "not an rlexp checkpoint", "corrupted", "resume",
                 "render videos", "another run"]:
        assert kind in inputs


@pytest.mark.parametrize("bad_input, args, quotes", readme_rows(), ids=[row[0] for row in readme_rows()])
def test_each_bad_input_gets_the_message_in_the_readme(bad_input, args, quotes, finished_run, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    data = (finished_run / "checkpoint.pt").read_bytes()
    (damaged / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    args = [arg.replace("<run>", str(finished_run)).replace("<damaged-run>", str(damaged))
            .replace("README.md", str(ROOT / "README.md")) for arg in args]
    message = reported_error([*args, "collector.total_frames=1024"], tmp_path / "out")
    for quote in quotes:
        quote = quote.replace("<run>", str(finished_run)).replace("<damaged-run>", str(damaged))
        assert quote in message, f"{bad_input}: {quote!r} not in {message!r}"
