"""``python -m rlexp.compare``: compare sweeps offline from their runs' metrics files.

Per configuration (a run's overrides minus ``seed``): seeds, final and best evaluation return with 95%
bootstrap confidence intervals, IQM, frames and wall time to a return threshold, FPS; learning curves.
"""

from rlexp.compare.runs import Run, config_key, config_labels, load_runs
from rlexp.compare.stats import (Curve, Estimate, Summary, bootstrap_ci, first_reached, group_runs, iqm, learning_curve,
                                 summarize)

__all__ = ["Curve", "Estimate", "Run", "Summary", "bootstrap_ci", "config_key", "config_labels", "first_reached",
           "group_runs", "iqm", "learning_curve", "load_runs", "summarize"]
