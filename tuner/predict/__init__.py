"""Predict, then measure: what is known of a configuration before it runs.

- `aiconfigurator`: NVIDIA's performance model behind one adapter (`AIConfiguratorPrior`,
  `prior_for`);
- `prior`: a prior (AIConfigurator, a profile or a recorded table), the ranking it gives and
  the belief piBO weights by (`Prior`, `rank`, `Belief`); a study loads its prior with
  `tuner.study.prior`;
- `plan`: `tuner plan`, a predicted ranking and profile with no GPU (`make_plan`).
"""

from tuner.predict.plan import Plan, make_plan
from tuner.predict.prior import Belief, Prior, rank

__all__ = ["Belief", "Plan", "Prior", "make_plan", "rank"]
