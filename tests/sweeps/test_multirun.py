"""A real multirun of 4 tiny jobs under each Hydra launcher, its W&B offline runs read back with wandb's reader.

The first two jobs crash in their second iteration (failing_loss.py). The two after them run in the
same process under the basic launcher and in reused worker processes under joblib, so a run left
open by a crash would swallow them.
"""

import itertools
from pathlib import Path

import pytest

from support import LAUNCHERS, read_wandb_runs, require_plugin, run_multirun

pytestmark = pytest.mark.e2e  # every test here runs python -m rlexp in a subprocess

SWEEPS = Path(__file__).parent
BUDGET = ["collector.total_frames=2048", "collector.frames_per_batch=1024", "env.num_envs=4", "eval.episodes=2"]
JOBS = list(itertools.product(["failing_ppo", "ppo"], [0, 1]))  # (loss.name, seed) in Hydra's job order


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_one_wandb_run_per_job_grouped_by_sweep_and_crashes_marked_failed(launcher, tmp_path):
    launcher_overrides, plugin = LAUNCHERS[launcher]
    if plugin:
        require_plugin(plugin)
    sweep_dir = tmp_path / "sweep"
    result = run_multirun(sweep_dir, "loss=ppo", "loss.name=failing_ppo,ppo", "seed=0,1", "imports=[failing_loss]",
                          "logger.tags=[sweep-test]", *BUDGET, *launcher_overrides, pythonpath=SWEEPS)
    assert result.returncode != 0 and "failing_ppo: deliberate test failure" in result.stderr, result.stderr

    runs = []
    for num, (loss, seed) in enumerate(JOBS):
        (records,) = read_wandb_runs(sweep_dir / str(num))
        (run,) = [r["run"] for r in records if r["type"] == "run"]
        runs.append(run)
        assert run["display_name"] == ",".join(["loss=ppo", f"loss.name={loss}", f"seed={seed}",
                                                "imports=[failing_loss]", "logger.tags=[sweep-test]", *BUDGET])
        config = run["config"]["update"]
        assert (config["loss.name"], config["seed"], config["hydra/job_num"]) == (loss, seed, num)
        assert config["hydra/output_dir"] == str(sweep_dir / str(num))
        assert run["job_type"] == "train" and run["tags"] == ["sweep-test"]

        frames = [r["history"]["item"]["frames"] for r in records if r["type"] == "history"]
        exit_codes = [r["exit"]["exit_code"] for r in records if r["type"] == "exit"]
        if loss == "failing_ppo":
            assert frames == [1024] and exit_codes == [1]
        else:
            assert frames == [1024, 2048] and exit_codes == [0]

    assert len({run["run_id"] for run in runs}) == 4
    assert {run["run_group"] for run in runs} == {"default-sweep"}
