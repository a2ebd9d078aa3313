"""``trainer.compile=true``: the compiled update trains the same parameters as the eager one."""

import pytest
import torch

from support import compose_config
from rlexp.registry import ConfigError
from rlexp.trainer import Trainer, seed_everything

# A small network (one hidden layer of 16) keeps the cold compile short; 3 minibatches of 3 sizes
# (96 frames split as 40, 40, 16) exercise the dynamic batch dimension.
SMALL = ["env.num_envs=4", "collector.frames_per_batch=96", "optim.num_minibatches=3", "optim.ppo_epochs=2",
         "policy.hidden_sizes=[16]"]


def trained_parameters(tmp_path, *overrides: str) -> list[torch.Tensor]:
    """The loss module's parameters after one iteration (collect, advantages, 2 epochs of updates) from seed 0."""
    seed_everything(0)
    trainer = Trainer(compose_config("logger=none", *SMALL, *overrides), torch.device("cpu"), {}, video_dir=tmp_path)
    rollout, _ = trainer.collect()
    trainer.estimate_advantages(rollout)
    trainer.update(rollout)
    trainer.close()
    return [p.detach().clone() for p in trainer.loss_module.parameters()]


@pytest.mark.e2e  # in process, but its two cold compiles take 30-60 s on a busy 2-core machine
@pytest.mark.parametrize("overrides", [[], ["loss=grpo", "env.num_envs=16", "collector.group_size=8"]],
                         ids=["clip_ppo", "grpo"])
def test_compiled_update_matches_the_eager_one(tmp_path, overrides):
    torch._dynamo.reset()
    eager = trained_parameters(tmp_path, *overrides)
    compiled = trained_parameters(tmp_path, *overrides, "trainer.compile=true")
    assert len(eager) == len(compiled)
    initial = trained_parameters(tmp_path, *overrides, "optim.lr=1e-30")  # the update did move the parameters
    assert any((e - i).abs().max() > 1e-4 for e, i in zip(eager, initial))
    for e, c in zip(eager, compiled):
        torch.testing.assert_close(c, e, rtol=1e-4, atol=1e-5)


def test_compile_with_a_recurrent_policy_is_refused(tmp_path):
    cfg = compose_config("logger=none", "policy=gru", "env=cartpole_masked", "trainer.compile=true")
    with pytest.raises(ConfigError, match=r"trainer.compile=true does not support a recurrent policy \(policy=gru\)"):
        Trainer(cfg, torch.device("cpu"), {}, video_dir=tmp_path)
