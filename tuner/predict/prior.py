"""Priors: what is known of a configuration before it is measured.

A prior predicts a configuration's figures (`tuner.measure.Prediction`) or that it will not fit
in memory: a performance model (NVIDIA's AIConfigurator, `tuner.predict.aiconfigurator`), or the
measurements of another GPU model (a profile or a recorded table). `rank` orders a space's
configurations by the predicted figure of a goal: those predicted to fit and keep the limits
first, best first, then those predicted to break a limit, then those predicted not to fit.
A study starts from the best of them (`--prior`); the measurement still decides.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from tuner.errors import TunerError
from tuner.measure.objective import Goal
from tuner.measure.trial import Predicted, Prediction, PriorPlan, TrialResult
from tuner.specs.knobs import Value
from tuner.specs.space import SearchSpace

#: The origin of a prediction when it stands in for a trial (ranking, a predicted profile).
PREDICTED = "predicted"
#: The most configurations a prior is asked about: a performance model answers in about a
#: second each on 2 cores.
MAX_CANDIDATES = 256


class Prior(Protocol):
    """A source of predictions over the knobs it `covers` (the rest do not change them)."""

    label: str
    covers: frozenset[str]

    def predict(self, knobs: Mapping[str, Value]) -> Prediction | None:
        """The prediction for `knobs`, or None where the prior has nothing to say."""
        ...


def as_trial(number: int, knobs: Mapping[str, Value], prediction: Prediction) -> TrialResult:
    """A prediction as a trial that took no time, so that a goal can rank and judge it."""
    return TrialResult(
        number=number,
        origin=PREDICTED,
        knobs=dict(knobs),
        status=prediction.status,
        reason=prediction.reason,
        measurement=prediction.measurement,
        wall_s=0.0,
        started_at=datetime.now(UTC),
        prediction=prediction,
    )


@dataclass
class Ranking:
    """A prior's predictions over a space, best first (see `rank`), and a lookup by the
    knobs the prior covers."""

    label: str
    covers: frozenset[str]
    ranked: list[TrialResult]
    #: How many of `ranked` are predicted to fit and keep the goal's limits.
    kept: int = 0

    def starts(self, count: int) -> list[dict[str, Value]]:
        """The best `count` configurations predicted to fit and keep the limits."""
        return [dict(r.knobs) for r in self.ranked[: min(count, self.kept)]]

    def prediction(self, knobs: Mapping[str, Value]) -> Prediction | None:
        """The prediction for a configuration: that of the ranked one that agrees with it on
        every covered knob."""
        return self.plan(0).prediction(dict(knobs))

    def plan(self, starts: int) -> PriorPlan:
        """What a study keeps of the ranking: its best `starts` and every prediction."""
        return PriorPlan(
            by=self.label,
            covers=sorted(self.covers),
            starts=self.starts(starts),
            predicted=[
                Predicted(knobs=r.knobs, prediction=r.prediction)
                for r in self.ranked
                if r.prediction is not None
            ],
        )


def candidates(space: SearchSpace, covers: frozenset[str]) -> list[dict[str, Value]]:
    """The space's configurations over the knobs a prior covers, the others at their
    defaults: each covered knob's values (`Knob.grid_values`), forbidden combinations left
    out, at most `MAX_CANDIDATES` (evenly thinned where there are more)."""
    names = [n for n in space.knobs if n in covers]
    values = [space.knobs[n].grid_values() for n in names]
    base = space.default_knobs()
    found: list[dict[str, Value]] = []
    for combo in itertools.product(*values):
        given = {**base, **dict(zip(names, combo, strict=True))}
        knobs = space.assemble(space.searched_values(given))
        if not space.violated(knobs) and knobs not in found:
            found.append(knobs)
    if len(found) > MAX_CANDIDATES:
        step = len(found) / MAX_CANDIDATES
        found = [found[int(i * step)] for i in range(MAX_CANDIDATES)]
    return found


def rank(prior: Prior, configurations: Sequence[Mapping[str, Value]], goal: Goal) -> Ranking:
    """Each configuration's prediction, ordered: predicted to fit and keep the goal's limits
    (best predicted figure first), then predicted to break a limit, then predicted not to fit;
    those the prior has nothing to say of are left out."""
    predicted = [
        as_trial(i, knobs, p)
        for i, knobs in enumerate(configurations)
        if (p := prior.predict(knobs)) is not None
    ]
    kept = goal.ranked(predicted, robust=False)
    chosen = {id(r) for r in kept}  # by identity: comparing records compares every figure
    fits = [r for r in predicted if r.status == "ok" and id(r) not in chosen]
    fits.sort(key=lambda r: -(goal.value(r) or 0.0) if goal.maximize else goal.value(r) or 0.0)
    rest = [r for r in predicted if r.status != "ok"]
    return Ranking(prior.label, prior.covers, [*kept, *fits, *rest], kept=len(kept))


def _covered_key(knobs: Mapping[str, Value], covers: frozenset[str]) -> str:
    return json.dumps({n: v for n, v in knobs.items() if n in covers}, sort_keys=True)


# -- another GPU model's measurements as a prior ----------------------------------------------


class MeasuredPrior:
    """The measurements of a recorded table or a profile (of another GPU model, say) as
    predictions: a configuration is predicted to do what it did there."""

    def __init__(self, label: str, trials: Sequence[TrialResult], names: Sequence[str]) -> None:
        self.label = label
        self.covers = frozenset(names)
        self._by_key: dict[str, TrialResult] = {}
        for trial in trials:
            self._by_key.setdefault(_covered_key(trial.knobs, self.covers), trial)

    def predict(self, knobs: Mapping[str, Value]) -> Prediction | None:
        found = self._by_key.get(_covered_key(knobs, self.covers))
        if found is None or found.status not in ("ok", "oom"):
            return None
        return Prediction(
            by=self.label,
            status="ok" if found.status == "ok" else "oom",
            reason=found.reason,
            measurement=found.measurement,
        )


def measured_prior(path: Path) -> MeasuredPrior:
    """A profile or a recorded table at `path` as a prior; one line when it is neither."""
    from tuner.profiles.profile import read_profile
    from tuner.replay.landscape import read_landscape

    try:
        text = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TunerError(f"--prior {path}: not a readable profile or table ({exc})") from None
    if isinstance(text, dict) and "points" in text:
        table = read_landscape(path)
        return MeasuredPrior(f"table {path} ({table.gpu.name})", table.points, list(table.grid))
    profile = read_profile(path)
    trials = [profile.best, *profile.front]
    as_results = [
        TrialResult(
            number=t.number,
            origin=PREDICTED,
            knobs=t.knobs,
            status=t.status,
            reason=t.reason,
            measurement=t.measurement,
            wall_s=0.0,
            started_at=profile.created_at,
        )
        for t in trials
    ]
    names = {n for t in trials for n in t.knobs}
    return MeasuredPrior(f"profile {path} ({profile.gpu.name})", as_results, sorted(names))


# -- a study's prior ---------------------------------------------------------------------------

#: The prior's best configurations a study runs first, before the baseline.
PRIOR_STARTS = 3


# -- the prior inside the acquisition function (piBO) ------------------------------------------

#: piBO's weight of a configuration predicted to break one of the goal's limits, as a share
#: of what its predicted figure alone would give it; and the weight of one predicted not to
#: fit (or with no figure). Neither is zero: a configuration the prior ranks last may win.
BREAKS_LIMIT = 0.25
NO_FIT = 0.05


class Belief:
    """Where a plan's predictions put the optimum, as piBO's prior over configurations
    (Hvarfner et al., "piBO", ICLR 2022): a weight in (0, 1] that the optimizer's acquisition
    function is multiplied by, raised to a power that decays as trials come in.

    A configuration predicted to fit weighs its predicted figure as a share of the best
    predicted one (at least `NO_FIT`), times `BREAKS_LIMIT` where it is predicted to break a
    limit; one predicted not to fit weighs `NO_FIT`; one the prior said nothing of, the median
    weight (no opinion)."""

    def __init__(self, plan: PriorPlan, goal: Goal) -> None:
        self.covers = frozenset(plan.covers)
        trials = [as_trial(i, p.knobs, p.prediction) for i, p in enumerate(plan.predicted)]
        fits = [v for t in trials if t.status == "ok" and (v := goal.value(t))]
        top = (max(fits) if goal.maximize else min(fits)) if fits else None
        self.weights: dict[str, float] = {}
        for trial in trials:
            key = _covered_key(trial.knobs, self.covers)
            self.weights.setdefault(key, _weight(trial, goal, top))
        self.neutral = statistics.median(self.weights.values()) if self.weights else 1.0

    def __call__(self, knobs: Mapping[str, Value]) -> float:
        return self.weights.get(_covered_key(knobs, self.covers), self.neutral)


def _weight(trial: TrialResult, goal: Goal, top: float | None) -> float:
    value = goal.value(trial)
    if trial.status != "ok" or not value or not top:
        return NO_FIT
    share = value / top if goal.maximize else top / value
    kept = goal.feasible(trial) is None
    return max(NO_FIT, min(1.0, share) * (1.0 if kept else BREAKS_LIMIT))


# -- a margin inside the limits ----------------------------------------------------------------


def with_margin(goal: Goal, margin: float) -> Goal:
    """`goal` with each limit moved inward by `margin` (a share of it): for starting only from
    configurations predicted to keep the limits by more than the model's error."""
    inward = tuple(
        dataclasses.replace(c, limit=c.limit * (1 - margin if c.op == "<=" else 1 + margin))
        for c in goal.constraints
    )
    return dataclasses.replace(goal, constraints=inward)


class PlanPrior:
    """A plan's predictions as a prior again, to rank them anew (under another goal)."""

    def __init__(self, plan: PriorPlan) -> None:
        self.label, self.covers, self._plan = plan.by, frozenset(plan.covers), plan

    def predict(self, knobs: Mapping[str, Value]) -> Prediction | None:
        return self._plan.prediction(dict(knobs))


def rerank(plan: PriorPlan, goal: Goal, starts: int = PRIOR_STARTS) -> PriorPlan:
    """A plan's predictions ranked by `goal`, and its best `starts`."""
    return rank(PlanPrior(plan), [p.knobs for p in plan.predicted], goal).plan(starts)
