"""Policy building blocks on tensordicts: the recurrent GRU module and its recurrent-mode switch."""

from rlexp.modules.gru import GRUModule
from rlexp.modules.recurrent_mode import recurrent_mode, set_recurrent_mode
from rlexp.modules.recurrent_state_primer import HiddenStateSpec, RecurrentStatePrimer

__all__ = ["GRUModule", "HiddenStateSpec", "RecurrentStatePrimer", "recurrent_mode", "set_recurrent_mode"]
