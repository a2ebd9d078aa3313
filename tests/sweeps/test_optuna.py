"""The Optuna preset maximises the final evaluation return that each trial's ``python -m rlexp`` job returns."""

import json

import pytest
import yaml
from omegaconf import OmegaConf

from support import ROOT, require_plugin, run_multirun

pytestmark = pytest.mark.e2e  # every test here runs python -m rlexp in a subprocess

BUDGET = ["collector.total_frames=2048", "collector.frames_per_batch=1024", "env.num_envs=4", "eval.episodes=2"]


def test_optuna_preset_reports_the_trial_with_the_best_final_eval_return(tmp_path):
    require_plugin("hydra_plugins.hydra_optuna_sweeper")
    sweep_dir = tmp_path / "sweep"
    result = run_multirun(sweep_dir, "+experiment=optuna_clip_ppo", "hydra.sweeper.n_trials=3", "logger=csv", *BUDGET)
    assert result.returncode == 0, result.stderr

    final_returns = {}
    for job_dir in sorted(path for path in sweep_dir.iterdir() if path.name.isdigit()):
        last = json.loads((job_dir / "metrics.jsonl").read_text().splitlines()[-1])
        final_returns[job_dir] = last["eval/episode_return"]
    assert len(final_returns) == 3

    optimum = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert optimum["best_value"] == max(final_returns.values())
    preset = yaml.safe_load((ROOT / "experiments/experiment/optuna_clip_ppo.yaml").read_text())
    assert optimum["best_params"].keys() == preset["hydra"]["sweeper"]["params"].keys()
    best_configs = [OmegaConf.load(job_dir / "config.yaml") for job_dir, value in final_returns.items()
                    if value == optimum["best_value"]]
    assert any(all(OmegaConf.select(config, key) == value for key, value in optimum["best_params"].items())
               for config in best_configs)
