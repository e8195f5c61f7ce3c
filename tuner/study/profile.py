"""A finished study as a tuned profile (`build_profile`): the study's setup, spec, results and
run directory in the record `tuner.profiles` keeps."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from tuner.errors import TunerError
from tuner.hardware.records import gpu_record, host_record
from tuner.measure.objective import METRICS, Goal, prediction_error
from tuner.measure.trial import PriorPlan, TrialResult
from tuner.profiles.profile import (
    PRIOR_FIGURES,
    EngineRecord,
    ModelRecord,
    PriorRecord,
    Profile,
    WorkloadRecord,
    speedup,
    traffic_record,
    trial_counts,
    trial_record,
)
from tuner.specs.workloads import summarize
from tuner.study.study import Study, StudyOutcome
from tuner.version import __version__


def build_profile(study: Study, outcome: StudyOutcome) -> Profile:
    """The profile of a finished study (a `tuner.study.study.Study` and its `StudyOutcome`); a
    replayed study's profile is the recorded machine's, marked with its table."""
    if outcome.best is None:
        raise TunerError("no configuration met the study's goal, so there is no profile to write")
    setup = study.setup
    goal = study.goal
    baseline = outcome.baseline
    replay = setup.replay
    shaped = None
    if replay is not None:
        gpu, host = replay.table.gpu, replay.table.host
        shape = replay.workload_summary()
    else:
        gpu, host = gpu_record(setup.hardware), host_record(setup.hardware)
        shape = summarize(setup.requests)
        shaped = traffic_record(setup.requests, setup.options.get("request_rate"))
    return Profile(
        tuner_version=__version__,
        created_at=datetime.now(UTC),
        gpu=gpu,
        host=host,
        engine=EngineRecord(
            name=replay.table.engine if replay else setup.catalogue.engine,
            adapter=setup.engine,
            versions=outcome.versions,
        ),
        model=ModelRecord(ref=setup.model.ref, slug=setup.model.slug, source=setup.model.source),
        workload=WorkloadRecord.model_validate(
            {
                "name": setup.workload.slug,
                "source": setup.workload.source,
                "seed": setup.workload.seed,
                **shape,
                "traffic": shaped,
            }
        ),
        protocol=replay.table.protocol if replay else study.spec.protocol,
        seed=study.spec.seed,
        optimizer=study.spec.optimizer,
        objectives=list(study.spec.objectives),
        constraints=list(study.spec.constraints),
        best=trial_record(outcome.best),
        front=[trial_record(r) for r in goal.front(outcome.results)] if goal.multi else [],
        baseline=trial_record(baseline) if baseline is not None else None,
        speedup=speedup(goal, baseline, outcome.best),
        trials=trial_counts(outcome.results),
        run_dir=str(study.run_dir),
        replay=str(replay.path) if replay else None,
        prior=_prior_record(study.spec.prior, outcome.results, goal),
    )


def _prior_record(
    plan: PriorPlan | None, results: Sequence[TrialResult], goal: Goal
) -> PriorRecord | None:
    """The prior a study started from and its error over the trials measured."""
    if plan is None:
        return None
    names = [o.name for o in goal.objectives if o.name in METRICS]
    figures = list(dict.fromkeys([*names, *PRIOR_FIGURES]))
    errors = prediction_error(results, figures)
    return PriorRecord(by=plan.by, starts=len(plan.starts), error_pct=errors)
