"""What a study optimizes, and what makes a trial unfit to be chosen.

One `Objective` answers the study (the loss it tells the optimizer), the winner's choice, the
profile (which records the objective by name), reports, plots, `tuner ci` and recorded
landscapes (the optimum): `value(result)` is the figure, `feasible(result)` the reason a trial
cannot count (None when it can), `score(result)` the figure of a feasible trial, `loss(result)`
what an optimizer minimizes.

The winner is chosen among trials whose timed repeats agree (their output tok/s spread within the
protocol's `max_cv`); a trial that spread more wins only when no feasible trial agrees. Throttling
is recorded but does not disqualify: on a GPU the fastest configurations are the ones that reach
its power limit (the committed H100 study's two fastest trials throttled with spreads of 2.2% and
0.8%). Today there is one objective, median output tok/s, under which every successful trial is
feasible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tuner.errors import TunerError
from tuner.measure import Measurement
from tuner.trial import TrialResult


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

    def best(
        self, results: Sequence[TrialResult], max_cv: float | None = None
    ) -> TrialResult | None:
        """The feasible trial with the best score (the earliest on a tie). With `max_cv`, a
        trial whose repeats spread more than that wins only when no feasible trial agrees."""
        scored = [r for r in results if self.score(r) is not None]
        if max_cv is not None:
            steady = [r for r in scored if _spread(r) <= max_cv]
            scored = steady or scored
        if not scored:
            return None
        sign = 1.0 if self.maximize else -1.0
        return max(scored, key=lambda r: sign * (self.score(r) or 0.0))


def _spread(result: TrialResult) -> float:
    m = result.measurement
    return m.output_tokens_per_s.cv if m is not None else float("inf")


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
