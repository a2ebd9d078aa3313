"""The ``ValueEstimators`` enum and the hyperparameters a loss uses when it builds an estimator itself."""

from __future__ import annotations

from enum import Enum


class ValueEstimators(Enum):
    """Value-estimator types accepted by ``LossModule.make_value_estimator`` (compared by name)."""

    TD0 = "Bootstrapped TD (1-step return)"
    TD1 = "TD(1) (infinity-step return)"
    TDLambda = "TD(lambda)"
    GAE = "Generalized advantage estimate"
    MAGAE = "Multi-agent generalized advantage estimate"
    VTrace = "V-trace"

    def __eq__(self, other):
        if isinstance(other, Enum):
            return self.name == other.name
        return NotImplemented

    def __hash__(self):
        return hash(self.name)


# String aliases accepted by make_value_estimator (matched case-insensitively).
ALIASES = {"td0": ValueEstimators.TD0, "td1": ValueEstimators.TD1, "tdlambda": ValueEstimators.TDLambda,
           "td_lambda": ValueEstimators.TDLambda, "gae": ValueEstimators.GAE}


def default_value_kwargs(value_type: ValueEstimators) -> dict:
    """Hyperparameters of an estimator built by a loss (``differentiable`` is True there)."""
    if value_type == ValueEstimators.TD0 or value_type == ValueEstimators.TD1:
        return {"gamma": 0.99, "differentiable": True}
    if value_type == ValueEstimators.TDLambda or value_type == ValueEstimators.GAE:
        return {"gamma": 0.99, "lmbda": 0.95, "differentiable": True}
    raise NotImplementedError(f"Unknown value type {value_type}; rlexp supports TD0, TD1, TDLambda and GAE.")
