"""make_tensordict_primer(): its spec, the key rule, and zeroing states on reset and across steps."""

import pytest
import torch
from tensordict import TensorDict

from rlexp.modules import GRUModule, RecurrentStatePrimer


def test_primers_spec_shape_dtype_and_key():
    primer = GRUModule(3, 8, num_layers=2, in_key="x", out_key="y").make_tensordict_primer()
    assert isinstance(primer, RecurrentStatePrimer) and list(primer.primers) == ["recurrent_state"]
    spec = primer.primers["recurrent_state"]
    assert spec.shape == (2, 8) and spec.dtype == torch.float32
    nested = GRUModule(3, 8, bidirectional=True, in_keys=["x", ("a", "h")], out_keys=["y", ("next", "a", "h")])
    assert nested.make_tensordict_primer().primers[("a", "h")].shape == (2, 8)


@pytest.mark.parametrize("out_keys", [["y", "h"], ["y", ("next", "other")], ["y", ("next", "a", "h")]])
def test_primer_needs_next_of_the_hidden_key(out_keys):
    with pytest.raises(RuntimeError, match=r"the out_keys should be named after \('next', <in_key>\)"):
        GRUModule(3, 8, in_keys=["x", "h"], out_keys=out_keys).make_tensordict_primer()


def test_reset_zeros_only_the_environments_that_start():
    primer = GRUModule(3, 4, num_layers=2, in_key="x", out_key="y").make_tensordict_primer()
    fresh = primer.reset(TensorDict(x=torch.randn(3, 3), batch_size=[3]))
    assert torch.equal(fresh["recurrent_state"], torch.zeros(3, 2, 4))
    state = torch.randn(3, 2, 4)
    td = TensorDict(x=torch.randn(3, 3), recurrent_state=state, is_init=torch.tensor([[False], [True], [False]]),
                    batch_size=[3])
    assert primer.reset(td) is td
    expected = state.clone()
    expected[1] = 0
    assert torch.equal(td["recurrent_state"], expected)
    primer.reset(td, mask=torch.tensor([True, False, False]))  # an explicit mask overrides is_init
    expected[0] = 0
    assert torch.equal(td["recurrent_state"], expected)
    td.set("recurrent_state", state.clone())
    assert not primer.reset(td.exclude("is_init"))["recurrent_state"].any()  # no mask: everything resets


def test_carry_moves_next_state_to_the_next_root():
    primer = GRUModule(3, 4, in_keys=["x", ("a", "h")], out_keys=["y", ("next", "a", "h")]).make_tensordict_primer()
    step = TensorDict({("next", "a", "h"): torch.ones(2, 2, 1, 4)}, batch_size=[2, 2])
    next_root = TensorDict(is_init=torch.tensor([[[True], [False]], [[False], [False]]]), batch_size=[2, 2])
    primer.carry(step, next_root)
    expected = torch.ones(2, 2, 1, 4)
    expected[0, 0] = 0
    assert torch.equal(next_root["a", "h"], expected)
    empty = primer.carry(TensorDict(batch_size=[2, 2]), TensorDict(batch_size=[2, 2]))
    assert torch.equal(empty["a", "h"], torch.zeros(2, 2, 1, 4))
