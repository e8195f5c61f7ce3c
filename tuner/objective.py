"""What a study optimizes, and what makes a trial unfit to be chosen.

One `Objective` answers the study (the loss it tells the optimizer), the winner's choice, the
profile (which records the objective by name), reports, plots, `tuner ci` and recorded landscapes
(the optimum): `value(result)` is the figure, `feasible(result)` the reason a trial cannot count
(None when it can), `score(result)` the figure of a feasible trial, `loss(result)` what an optimizer
minimizes.

A study ends by measuring its best one or two configurations again on fresh repeats (origin
`confirm`), and its pick is the best of those (`winner`): the tuning measurement that selected a
configuration is not the one that reports it, as the HPO literature asks (the pick of the search is
biased upwards by its own noise). The search's best is chosen on a pessimistic estimate: the score
moved against it by its own spread (median x (1 - cv) when larger is better), so that a trial whose
repeats spread 26% wins only by a margin larger than that spread. Not "stable trials only": on this
2-core CPU most trials spread more than the protocol's 10% (7% to 26% in the recorded CPU
landscape), and that rule handed the win to the baseline at 279 tok/s over trials at 2,386.
Throttling is recorded but does not count against a trial: on a GPU the fastest configurations are
the ones that reach its power limit (the committed H100 study's two fastest trials throttled, with
spreads of 2.2% and 0.8%). A trial with failed requests (a server that answered errors) is not a
clean measurement and is infeasible whatever its figure. Today there is one objective, median output
tok/s.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tuner.errors import TunerError
from tuner.measure import Measurement
from tuner.trial import TrialResult

#: The origin of a confirmation trial.
CONFIRM = "confirm"


@dataclass(frozen=True)
class Objective:
    """A figure of a trial to maximize or minimize, and the trials that may count."""

    name: str
    label: str
    maximize: bool
    figure: Callable[[Measurement], float | None]

    def of(self, measurement: Measurement | None) -> float | None:
        """The figure of a measurement (a trial's, a profile's), None without one."""
        return None if measurement is None else self.figure(measurement)

    def value(self, result: TrialResult) -> float | None:
        """The trial's figure, feasible or not (None when it has none)."""
        return self.of(result.measurement)

    def feasible(self, result: TrialResult) -> str | None:
        """Why the trial cannot count, or None when it can."""
        if result.status != "ok":
            return f"{result.status}: {result.reason}" if result.reason else result.status
        m = result.measurement
        if m is not None and m.failed_requests:
            done = sum(r.requests for r in m.runs)
            return (
                f"{m.failed_requests} of {done + m.failed_requests} requests failed "
                f"({'; '.join(m.failures)})"
            )
        if self.value(result) is None:
            return f"no {self.label} figure"
        return None

    def score(self, result: TrialResult) -> float | None:
        """The figure of a feasible trial; None for any other."""
        return None if self.feasible(result) is not None else self.value(result)

    def loss(self, result: TrialResult) -> float | None:
        """What an optimizer minimizes: the score, negated when larger is better."""
        score = self.score(result)
        if score is None:
            return None
        return -score if self.maximize else score

    def pessimistic(self, result: TrialResult) -> float | None:
        """The score moved against the trial by its spread (the coefficient of variation of its
        timed repeats); None for an infeasible trial."""
        score = self.score(result)
        if score is None:
            return None
        spread = _spread(result)
        return score * (1 - spread) if self.maximize else score * (1 + spread)

    def ranked(self, results: Sequence[TrialResult], *, robust: bool = True) -> list[TrialResult]:
        """The feasible trials, best first (the earlier first on a tie): by pessimistic
        estimate with `robust` (a study's choice), else by score (a table's optimum)."""
        rank = self.pessimistic if robust else self.score
        scored = [(r, v) for r in results if (v := rank(r)) is not None]
        scored.sort(key=lambda rv: rv[1], reverse=self.maximize)  # stable: ties keep order
        return [r for r, _ in scored]

    def best(self, results: Sequence[TrialResult], *, robust: bool = True) -> TrialResult | None:
        """The first of `ranked`, or None when no trial is feasible."""
        return next(iter(self.ranked(results, robust=robust)), None)


def winner(goal: Objective, results: Sequence[TrialResult]) -> TrialResult | None:
    """A study's pick: the best of its confirmation trials (origin `confirm`: the best
    configurations measured again on fresh repeats after the search) where there are feasible
    ones, else the best of all its trials."""
    confirmed = goal.best([r for r in results if r.origin == CONFIRM])
    return confirmed or goal.best(results)


def _spread(result: TrialResult) -> float:
    m = result.measurement
    return m.output_tokens_per_s.cv if m is not None else 0.0


def _output_tokens_per_s(m: Measurement) -> float | None:
    return m.output_tokens_per_s.median


THROUGHPUT = Objective("output_tokens_per_s", "output tok/s", True, _output_tokens_per_s)
OBJECTIVES: dict[str, Objective] = {o.name: o for o in (THROUGHPUT,)}


def objective(name: str) -> Objective:
    """The objective called `name`; one line naming the known ones otherwise."""
    found = OBJECTIVES.get(name)
    if found is None:
        raise TunerError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")
    return found
