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
