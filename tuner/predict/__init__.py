"""Predict, then measure: what is known of a configuration before it runs.

- `aiconfigurator`: NVIDIA's performance model behind one adapter (`AIConfiguratorPrior`,
  `prior_for`);
- `prior`: a prior (AIConfigurator, a profile or a recorded table) and the study's start it
  gives (`Prior`, `load_prior`, `prior_plan`, `rank`, `Belief`);
- `plan`: `tuner plan`, a predicted ranking and profile with no GPU (`make_plan`).
"""

from tuner.predict.plan import Plan, make_plan
from tuner.predict.prior import Belief, Prior, load_prior, prior_plan, rank

__all__ = ["Belief", "Plan", "Prior", "load_prior", "make_plan", "prior_plan", "rank"]
