"""Sweep presets compose: the Slurm launcher preset against submitit's schema, every job of loss_comparison."""

import itertools

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from support import compose_config, require_plugin


def test_slurm_preset_is_a_valid_submitit_slurm_config():
    require_plugin("hydra_plugins.hydra_submitit_launcher")
    launcher = compose_config("hydra/launcher=slurm", "hydra.launcher.partition=cpu", hydra=True).hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.cpus_per_task, launcher.max_num_timeout) == ("cpu", 2, 0)


def test_loss_comparison_is_four_losses_times_three_seeds_on_cartpole():
    params = compose_config("+experiment=loss_comparison", hydra=True).hydra.sweeper.params
    sweeps = OverridesParser.create().parse_overrides([f"{key}={value}" for key, value in params.items()])
    jobs = list(itertools.product(*([f"{o.key_or_group}={v}" for v in o.sweep_string_iterator()] for o in sweeps)))
    assert len(jobs) == 12
    configs = [compose_config("+experiment=loss_comparison", *job, hydra=True) for job in jobs]
    assert {(c.loss.name, c.seed) for c in configs} == set(itertools.product(
        ["ppo", "clip_ppo", "klpen_ppo", "grpo"], [0, 1, 2]))
    assert {(c.experiment, c.env.id) for c in configs} == {("loss_comparison", "CartPole-v1")}


def test_a_missing_plugin_skips_the_test_locally_and_fails_it_in_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="hydra_plugins.no_such_launcher"):
        require_plugin("hydra_plugins.no_such_launcher")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true and the Hydra plugin hydra_plugins.no_such_launcher"):
        require_plugin("hydra_plugins.no_such_launcher")
    require_plugin("hydra.plugins")  # installed (Hydra's own plugin interfaces): neither
