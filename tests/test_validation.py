import re

import pytest

from support import compose_config
from rlexp.registry import ConfigError, losses
from rlexp.validation import validate_config


def test_default_and_preset_configs_are_valid():
    validate_config(compose_config())
    validate_config(compose_config("loss=grpo"))
    validate_config(compose_config("+experiment=cleanrl_cartpole"))


@pytest.mark.parametrize("override, message", [
    ("optim.lr=-0.001", r"optim.lr=-0.001 is out of range: it must be > 0"),
    ("value_estimator.gamma=1.5", r"value_estimator.gamma=1.5 is out of range: it must be in \(0, 1\]"),
    ("value_estimator.gamma=0", r"value_estimator.gamma=0 is out of range"),
    ("env.num_envs=0", r"env.num_envs=0 is out of range: it must be >= 1"),
    ("trainer.on_nan=ignore", r"trainer.on_nan='ignore'; choose one of: raise, skip"),
    ("optim.lr=nan", r"optim.lr=nan must be a float > 0"),
    ("collector.group_size=1", r"collector.group_size=1 must be null or an integer >= 2"),
    ("eval.video_every=0", r"eval.video_every=0 is out of range: it must be >= 1"),
])
def test_bad_values_name_the_key_and_the_valid_range(override, message):
    with pytest.raises(ConfigError, match=message):
        validate_config(compose_config(override))


@pytest.mark.parametrize("override, message", [
    ("optim.lr=fast", r"Value 'fast' of type 'str' could not be converted to Float"),
    ("collector.total_frames=1.5e5", r"Value '150000.0' of type 'float' could not be converted to Integer"),
    ("optim.anneal_lr=maybe", r"Value 'maybe' is not a valid bool"),
    ("eval.video=sometimes", r"Value 'sometimes' is not a valid bool"),
    ("seed=first", r"Value 'first' of type 'str' could not be converted to Integer"),
])
def test_the_config_schema_rejects_wrong_types_before_rlexp_runs(override, message):
    with pytest.raises(Exception) as error:
        compose_config(override)
    assert re.search(message, str(error.value.__cause__))


def test_group_keys_are_open_so_the_registry_names_the_accepted_ones():
    with pytest.raises(ConfigError, match=r"'clip_epsilom'. Did you mean: clip_epsilon\? Accepted options: clip_epsilon,"):
        losses.build(compose_config("loss.clip_epsilom=0.1").loss, None, None)
