"""A study: the loop over an optimizer, a goal and an executor, and the run directory it keeps.

- `prepare`: engine, model and workload resolved and checked before any trial runs (`Setup`,
  `prepare`);
- `rundir`: a study's folder, its spec and its trials, written so that none is lost
  (`StudySpec`, `read_spec`, `read_trials`, `append_trial`);
- `study`: the loop itself, with the baseline, the prior's starts, back-off after out of memory
  and confirmation (`Study`, `StudyOutcome`, `replay_study`, `warm_start`).
"""

from tuner.study.prepare import Setup, prepare
from tuner.study.rundir import StudySpec, append_trial, read_spec, read_trials
from tuner.study.study import Study, StudyOutcome, replay_study, warm_start

__all__ = [
    "Setup",
    "Study",
    "StudyOutcome",
    "StudySpec",
    "append_trial",
    "prepare",
    "read_spec",
    "read_trials",
    "replay_study",
    "warm_start",
]
