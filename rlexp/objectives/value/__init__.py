"""Value estimators (GAE, TD(0), TD(1), TD(lambda), group-relative), registered in ``rlexp.registry.value_estimators``."""

from rlexp.objectives.value.base import ValueEstimatorBase
from rlexp.objectives.value.gae import GAE
from rlexp.objectives.value.group_relative import GroupRelativeEstimator
from rlexp.objectives.value.td import TD0Estimator, TD1Estimator, TDLambdaEstimator

__all__ = ["GAE", "GroupRelativeEstimator", "TD0Estimator", "TD1Estimator", "TDLambdaEstimator", "ValueEstimatorBase"]
