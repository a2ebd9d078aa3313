import pytest

from support import compose_config
from rlexp.registry import ConfigError
from rlexp.validation import validate_config


def test_default_and_preset_configs_are_valid():
    validate_config(compose_config())
    validate_config(compose_config("loss=grpo"))
    validate_config(compose_config("+experiment=cleanrl_cartpole"))


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-0.001", r"optim.lr=-0.001 is out of range: it must be > 0"),
    ("optim.lr=fast", r"optim.lr='fast' must be a float > 0"),
    ("value_estimator.gamma=1.5", r"value_estimator.gamma=1.5 is out of range: it must be in \(0, 1\]"),
    ("value_estimator.gamma=0", r"value_estimator.gamma=0 is out of range"),
    ("env.num_envs=0", r"env.num_envs=0 is out of range: it must be >= 1"),
    ("collector.total_frames=1.5e5", r"collector.total_frames=150000.0 must be an integer >= 1"),
    ("optim.anneal_lr=1", r"optim.anneal_lr=1 must be a bool"),
    ("optim.lr=nan", r"optim.lr=nan must be a float > 0"),
    ("collector.group_size=1", r"collector.group_size=1 must be null or an integer >= 2"),
])
def test_bad_values_name_the_key_and_the_valid_range(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config(override))
