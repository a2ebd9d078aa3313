"""A failed job never ends a sweep: one configuration error, one diverging job and one crash among good jobs,
under each launcher and under Optuna, and a job stopped by SIGTERM. Each job's folder records how it ended;
the sweep lists every job at its end and exits with code 1."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support import LAUNCHERS, cli_env, run_multirun, wait_for

SWEEPS = Path(__file__).parent

BUDGET = ["logger=csv", "collector.total_frames=2048", "collector.frames_per_batch=1024", "env.num_envs=4",
          "eval.episodes=2"]
# loss.name per job: unknown (configuration error), NaN loss in iteration 2, exception in iteration 2, fine
JOBS = {"no_such_loss": (2, "configuration error: Unknown losses 'no_such_loss'"),
        "nan_ppo": (3, "training stopped: non-finite loss: loss_objective=nan"),
        "failing_ppo": (1, "RuntimeError: failing_ppo: deliberate test failure"),
        "ppo": (0, None)}


def final_eval_return(job_dir):
    return json.loads((job_dir / "metrics.jsonl").read_text().splitlines()[-1])["eval/episode_return"]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_every_job_runs_and_the_sweep_ends_with_a_summary_and_exit_code_1(launcher, tmp_path):
    launcher_overrides, plugin = LAUNCHERS[launcher]
    if plugin:
        pytest.importorskip(plugin)
    sweep_dir = tmp_path / "sweep"
    result = run_multirun(sweep_dir, "loss=ppo", f"loss.name={','.join(JOBS)}", "imports=[failing_loss]", *BUDGET,
                          *launcher_overrides, pythonpath=SWEEPS)
    assert result.returncode == 1, result.stderr
    assert f"rlexp: sweep {sweep_dir}: 4 jobs, 1 completed, 3 failed" in result.stderr

    for num, (loss, (exit_code, error)) in enumerate(JOBS.items()):
        job = json.loads((sweep_dir / str(num) / "job.json").read_text())
        assert job["job"] == num and f"loss.name={loss}" in job["overrides"]
        assert job["exit_code"] == exit_code and job["status"] == ("completed" if exit_code == 0 else "failed")
        if error is None:
            assert job["error"] is None and job["eval/episode_return"] == final_eval_return(sweep_dir / str(num))
            assert (sweep_dir / str(num) / "checkpoint.pt").exists()
            line = f"  job {num}  loss.name={loss}  completed  eval/episode_return={job['eval/episode_return']:.2f}"
        else:
            assert job["error"].startswith(error) and job["eval/episode_return"] is None
            line = f"  job {num}  loss.name={loss}  failed (exit code {exit_code})  {error}"
        assert line in result.stderr, line


def test_optuna_tells_failed_trials_as_failed_and_finishes_the_study(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    sweep_dir = tmp_path / "sweep"
    # with sampler seed 2 the first trial draws lr=0.001 and the next two lr=-1.0 (a configuration error)
    result = run_multirun(sweep_dir, "+experiment=optuna_clip_ppo", "optim.lr=choice(0.001,-1.0)",
                          "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=2", *BUDGET)
    assert result.returncode == 1, result.stderr
    jobs = [json.loads((sweep_dir / str(num) / "job.json").read_text()) for num in range(3)]
    assert [job["exit_code"] for job in jobs] == [0, 2, 2]
    assert ["optim.lr=-1.0" in job["overrides"] for job in jobs] == [False, True, True]
    log = result.stdout + result.stderr
    assert len(re.findall(r"Failed experiment: .*optim.lr=-1.0 is out of range", log)) == 2  # FAIL, no value

    optimum = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert optimum["best_value"] == jobs[0]["eval/episode_return"] == final_eval_return(sweep_dir / "0")
    assert optimum["best_params"]["optim.lr"] == 0.001
    assert f"rlexp: sweep {sweep_dir}: 3 jobs, 1 completed, 2 failed" in result.stderr


def test_a_job_stopped_by_sigterm_is_recorded_and_the_joblib_sweep_goes_on(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep_dir = tmp_path / "sweep"
    process = subprocess.Popen(
        [sys.executable, "-m", "rlexp", "-m", f"hydra.sweep.dir={sweep_dir}", "hydra/launcher=joblib",
         "hydra.launcher.n_jobs=2", "seed=0,1,2", "logger=csv", "collector.total_frames=16384",
         "collector.frames_per_batch=1024", "env.num_envs=4", "eval.episodes=2"],
        env=cli_env(tmp_path), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        metrics, lock = sweep_dir / "0" / "metrics.jsonl", sweep_dir / "0" / ".rlexp.lock"
        wait_for(lambda: metrics.exists() and metrics.read_text().count("\n") >= 1)
        os.kill(int(lock.read_text().split()[1]), signal.SIGTERM)  # the lock names the job's process
        _, stderr = process.communicate(timeout=300)
    finally:
        process.kill()
    assert process.returncode == 1, stderr
    jobs = [json.loads((sweep_dir / str(num) / "job.json").read_text()) for num in range(3)]
    assert [job["exit_code"] for job in jobs] == [143, 0, 0]
    assert jobs[0]["error"].startswith("stopped by SIGTERM at ") and "checkpoint" in jobs[0]["error"]
    assert (sweep_dir / "1" / "checkpoint.pt").exists() and (sweep_dir / "2" / "checkpoint.pt").exists()
    assert "3 jobs, 2 completed, 1 failed" in stderr
