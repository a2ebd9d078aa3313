"""How a loss gets its value estimator: ``make_value_estimator`` and the lazy ``value_estimator``."""

from __future__ import annotations

from rlexp.objectives.value import GAE, TD0Estimator, TD1Estimator, TDLambdaEstimator, ValueEstimatorBase
from rlexp.objectives.value_types import ALIASES, ValueEstimators, default_value_kwargs

ESTIMATOR_CLASSES = {
    ValueEstimators.TD0: TD0Estimator,
    ValueEstimators.TD1: TD1Estimator,
    ValueEstimators.TDLambda: TDLambdaEstimator,
    ValueEstimators.GAE: GAE,
}
_TYPE_OF_CLASS = {cls: value_type for value_type, cls in ESTIMATOR_CLASSES.items()}


class ValueEstimatorFactory:
    """Mixin for ``LossModule``: builds, stores and re-keys the loss's value estimator."""

    @staticmethod
    def default_value_kwargs(value_type: ValueEstimators) -> dict:
        return default_value_kwargs(value_type)

    @property
    def value_estimator(self) -> ValueEstimatorBase:
        """The estimator; built on first access from ``default_value_estimator`` and its defaults."""
        if self._value_estimator is None:
            self.make_value_estimator(self.default_value_estimator)
        return self._value_estimator

    @value_estimator.setter
    def value_estimator(self, estimator: ValueEstimatorBase) -> None:
        self._value_estimator = estimator

    def _value_network(self):
        """The network the loss's own estimators evaluate (its critic, if any)."""
        return getattr(self, "critic_network", None)

    def make_value_estimator(self, value_type=None, **hyperparams) -> None:
        """Set the value estimator.

        ``value_type``: None (the default type), a ``ValueEstimators`` member or its string alias
        (``"gae"``, ``"td0"``, ``"td1"``, ``"tdlambda"``; built on the critic with the defaults of
        ``default_value_kwargs`` updated by ``hyperparams``), an estimator instance (used as is),
        or an estimator class (instantiated with ``hyperparams``). The loss's key names are then
        applied to the estimator.
        """
        if value_type is None:
            value_type = self.default_value_estimator
        if isinstance(value_type, ValueEstimatorBase):
            estimator = value_type
            value_type = _TYPE_OF_CLASS.get(type(estimator), type(estimator))
        elif isinstance(value_type, type) and issubclass(value_type, ValueEstimatorBase):
            devices = {p.device for p in self.parameters()}
            if len(devices) == 1 and "device" not in hyperparams:
                hyperparams["device"] = devices.pop()
            estimator = value_type(**hyperparams)
            value_type = _TYPE_OF_CLASS.get(value_type, value_type)
        else:
            if isinstance(value_type, str):
                if value_type.lower() not in ALIASES:
                    raise NotImplementedError(f"Unknown value type {value_type!r}; use one of {sorted(ALIASES)}.")
                value_type = ALIASES[value_type.lower()]
            if value_type not in ESTIMATOR_CLASSES:
                raise NotImplementedError(f"Value type {value_type} is not implemented for {type(self).__name__}.")
            kwargs = {**self.default_value_kwargs(value_type), **hyperparams}
            estimator = ESTIMATOR_CLASSES[value_type](value_network=self._value_network(), **kwargs)
        self._value_estimator = estimator
        self.value_type = value_type
        self._apply_keys_to_estimator(estimator)
