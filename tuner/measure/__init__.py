"""How a configuration is measured, what a trial records, and how the records are scored.

- `measurement`: the protocol (a warm-up, then timed repeats under a time limit) and what it
  yields (`MeasurementProtocol`, `measure`, `Measurement`, `Run`);
- `trial`: one trial's task and its record (`TrialTask`, `TrialResult`, `Prediction`);
- `objective`: goals, SLO limits and the metrics they read (`Goal`, `goal`, `Constraint`,
  `winner`).
"""

from tuner.measure.measurement import Measurement, MeasurementProtocol, Run, measure
from tuner.measure.objective import THROUGHPUT, Constraint, Goal, Metric, goal, metric, winner
from tuner.measure.trial import Prediction, PriorPlan, TrialResult, TrialTask

__all__ = [
    "THROUGHPUT",
    "Constraint",
    "Goal",
    "Measurement",
    "MeasurementProtocol",
    "Metric",
    "Prediction",
    "PriorPlan",
    "Run",
    "TrialResult",
    "TrialTask",
    "goal",
    "measure",
    "metric",
    "winner",
]
