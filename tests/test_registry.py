import subprocess
import sys
import types

import pytest

from rlexp.registry import ConfigError, Registry


def make_registry():
    registry = Registry("losses")

    @registry.register("scaled")
    def scaled(network, *, scale=1.0, offset=0.0):
        return (network, scale, offset)

    return registry


def test_build_passes_supplied_args_and_config_keys():
    assert make_registry().build({"name": "scaled", "scale": 2.0}, "net") == ("net", 2.0, 0.0)


def test_unknown_name_lists_registered_entries():
    with pytest.raises(ConfigError, match=r"Unknown losses 'scaledd'.*Registered losses entries: scaled"):
        make_registry().build({"name": "scaledd"}, "net")


def test_unknown_keyword_names_accepted_ones():
    with pytest.raises(ConfigError, match=r"'scael'.*Accepted options: scale, offset"):
        make_registry().build({"name": "scaled", "scael": 2.0}, "net")


def test_keywords_supplied_by_the_trainer_are_not_config_options():
    registry = Registry("value_estimators")
    registry.register("gae", lambda *, value_network, gamma=0.99: (value_network, gamma))
    assert registry.build({"name": "gae", "gamma": 0.9}, value_network="v") == ("v", 0.9)
    with pytest.raises(ConfigError, match="Accepted options: gamma"):
        registry.build({"name": "gae", "value_network": "x"}, value_network="v")


def test_missing_name_and_duplicate_registration_fail():
    registry = make_registry()
    with pytest.raises(ConfigError, match="no `name:`; choose one of: scaled"):
        registry.build({"scale": 1.0})
    with pytest.raises(ConfigError, match="already registered"):
        registry.register("scaled", lambda: None)


def test_values_rejected_by_the_builder_become_config_errors():
    registry = Registry("losses")

    @registry.register("checked")
    def checked(*, loss_critic_type="l2"):
        if loss_critic_type not in ("l1", "l2", "smooth_l1"):
            raise NotImplementedError(f"loss_critic_type={loss_critic_type!r}; choose one of l1, l2, smooth_l1")

    with pytest.raises(ConfigError, match="losses 'checked' rejected .*l3.*choose one of l1, l2, smooth_l1"):
        registry.build({"name": "checked", "loss_critic_type": "l3"})


def test_a_bug_inside_a_builder_keeps_its_own_error_and_traceback():
    registry = Registry("losses")

    @registry.register("buggy")
    def buggy(*, scale=1.0):
        offset = None
        return scale + offset  # TypeError raised by the interpreter, not a rejected argument

    with pytest.raises(TypeError, match="unsupported operand") as err:
        registry.build({"name": "buggy", "scale": 2.0})
    assert err.type is TypeError and err.traceback[-1].name == "buggy"


def test_a_missing_required_option_is_a_config_error():
    registry = Registry("envs")
    registry.register("needs_id", lambda *, id, num_envs=1: (id, num_envs))
    with pytest.raises(ConfigError, match="envs 'needs_id': missing a required argument: 'id'"):
        registry.build({"name": "needs_id", "num_envs": 2})


def test_omegaconf_config_reaches_the_builder_as_plain_python():
    from omegaconf import OmegaConf

    registry = Registry("losses")
    registry.register("echo", lambda **kw: kw)
    built = registry.build(OmegaConf.create({"name": "echo", "dims": [1, 2], "nested": {"a": 1}}))
    assert built == {"dims": [1, 2], "nested": {"a": 1}} and type(built["dims"]) is list


@pytest.fixture
def builtins_module(tmp_path, monkeypatch):
    """A registry whose built-ins live in a module not yet imported, as rlexp's own do before first use."""
    registry = Registry("losses", builtins="fake_builtins")
    (tmp_path / "fake_builtins.py").write_text(
        "import fake_registry\n\n\n@fake_registry.REGISTRY.register('builtin')\ndef builtin():\n    return 'built-in'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "fake_registry", types.SimpleNamespace(REGISTRY=registry))
    monkeypatch.delitem(sys.modules, "fake_builtins", raising=False)
    return registry


def test_built_ins_are_imported_on_first_lookup(builtins_module):
    assert "fake_builtins" not in sys.modules
    assert builtins_module.get("builtin")() == "built-in" and "fake_builtins" in sys.modules
    assert builtins_module.names() == ["builtin"]


def test_a_user_entry_cannot_take_a_built_in_name_before_the_built_ins_are_loaded(builtins_module):
    with pytest.raises(ConfigError, match="'builtin' is already registered"):
        builtins_module.register("builtin", lambda: "mine")


@pytest.mark.e2e
def test_every_registry_lists_its_built_ins_in_a_fresh_interpreter():
    script = ("from rlexp.registry import envs, loggers, losses, policies, replay_transforms, value_estimators\n"
              "losses.get('clip_ppo')\n"
              "for registry in (envs, policies, losses, value_estimators, replay_transforms, loggers):\n"
              "    print(registry.group, *registry.names())\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.splitlines() == [
        "envs gym", "policies gru mlp", "losses clip_ppo grpo klpen_ppo ppo",
        "value_estimators gae group_relative td0 td1 td_lambda", "replay_transforms multistep none",
        "loggers csv none wandb"]
