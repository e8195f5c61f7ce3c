"""What a study optimizes, the limits a configuration must keep, and what makes a trial win.

A `Metric` is a figure of a measurement: computed on each timed run and taken as the median over
the runs (its spread is their coefficient of variation). Objectives and constraints both name
metrics: output tok/s (in all, or per GPU used), goodput, J per output token, output tok/s per
W, power, memory, and any latency percentile (`ttft_p99_ms`, `itl_p50_ms`, `e2e_p90_ms`, ...).
A `Constraint` is a metric and a limit (`ttft_p99_ms<=500`); a trial that breaks one is
infeasible, with the reason in words ("p99 TTFT 812 ms > 500 ms"). Goodput counts only the
requests that met every latency limit, as vLLM's `--goodput` does: a request is good when its
TTFT, its time per output token (for `itl` limits) and its end-to-end latency are each within
the limits given for them.

A `Goal` is what a study is for: one objective or several (a Pareto front), and constraints. It
answers the study (the loss it tells the optimizer), the winner's choice, the profile, reports,
plots, `tuner ci` and recorded landscapes (the optimum).

A study ends by measuring its best one or two configurations again on fresh repeats (origin
`confirm`), and its pick is the best of those (`winner`): the tuning measurement that selected a
configuration is not the one that reports it (the pick of the search is biased upwards by its
own noise). The search's best is chosen on a pessimistic estimate: the score moved against it by
its own spread (median x (1 - cv) when larger is better), so that a trial whose repeats spread
26% wins only by a margin larger than that spread. Not "stable trials only": on this 2-core CPU
most trials spread more than the protocol's 10%, and that rule handed the win to the baseline at
279 tok/s over trials at 2,386. Throttling is recorded but does not count against a trial: on a
GPU the fastest configurations are the ones that reach its power limit. A trial with failed
requests (a server that answered errors) is not a clean measurement and is infeasible whatever
its figures.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tuner.errors import TunerError
from tuner.measure.measurement import Measurement, Run, stats
from tuner.measure.trial import TrialResult

#: The origin of a confirmation trial.
CONFIRM = "confirm"

#: What a metric needs the engine or the machine to report.
Needs = Literal["latency", "telemetry"] | None


@dataclass(frozen=True)
class Metric:
    """A figure of each timed run; a measurement's figure is the median over its runs."""

    name: str
    label: str
    unit: str
    maximize: bool
    per_run: Callable[[Run], float | None]
    needs: Needs = None

    def runs_of(self, m: Measurement) -> list[float] | None:
        values = [self.per_run(r) for r in m.runs]
        if not values or any(v is None for v in values):
            return None
        return [v for v in values if v is not None]

    def of(self, m: Measurement | None) -> float | None:
        """The median over the timed runs, None without a measurement or a figure in a run."""
        values = None if m is None else self.runs_of(m)
        return statistics.median(values) if values else None

    def spread(self, m: Measurement | None) -> float:
        """The coefficient of variation over the timed runs (0 without figures)."""
        values = None if m is None else self.runs_of(m)
        return stats(values).cv if values else 0.0

    def fmt(self, value: float) -> str:
        """`812 ms`, `2,386.0 output tok/s`."""
        digits = 0 if self.unit in ("ms", "MiB", "W") else 4 if self.unit == "J" else 1
        return f"{value:,.{digits}f} {self.unit}"


def _telemetry(field: str) -> Callable[[Run], float | None]:
    def figure(run: Run) -> float | None:
        return None if run.telemetry is None else getattr(run.telemetry, field)

    return figure


def _joules_per_token(run: Run) -> float | None:
    t = run.telemetry
    if t is None or not t.energy_j or run.output_tokens == 0:
        return None
    return t.energy_j / run.output_tokens


def _tokens_per_joule(run: Run) -> float | None:
    j = _joules_per_token(run)
    return 1 / j if j else None


LATENCY_KINDS = {"ttft": "TTFT", "itl": "ITL", "e2e": "E2E latency"}
LATENCY_STATS = ("mean", "p50", "p90", "p99")


def _latency(kind: str, stat: str) -> Metric:
    def figure(run: Run) -> float | None:
        found = None if run.latency is None else getattr(run.latency, kind)
        return None if found is None else getattr(found, f"{stat}_ms")

    label = f"{stat} {LATENCY_KINDS[kind]}"
    return Metric(f"{kind}_{stat}_ms", label, "ms", False, figure, "latency")


_METRICS = [
    Metric("output_tokens_per_s", "output tok/s", "tok/s", True, lambda r: r.output_tokens_per_s),
    Metric("total_tokens_per_s", "total tok/s", "tok/s", True, lambda r: r.total_tokens_per_s),
    Metric(
        "output_tokens_per_s_per_gpu",
        "output tok/s per GPU",
        "tok/s",
        True,
        lambda r: r.output_tokens_per_s_per_gpu,
    ),
    Metric("requests_per_s", "requests/s", "req/s", True, lambda r: r.requests_per_s),
    Metric("joules_per_token", "J per output token", "J", False, _joules_per_token, "telemetry"),
    Metric(
        "output_tokens_per_s_per_w",
        "output tok/s per W",
        "tok/J",
        True,
        _tokens_per_joule,
        "telemetry",
    ),
    Metric("avg_power_w", "average power", "W", False, _telemetry("avg_power_w"), "telemetry"),
    Metric("peak_power_w", "peak power", "W", False, _telemetry("peak_power_w"), "telemetry"),
    Metric(
        "peak_memory_mib", "peak memory", "MiB", False, _telemetry("peak_memory_mib"), "telemetry"
    ),
    *(_latency(k, s) for k in LATENCY_KINDS for s in LATENCY_STATS),
]
METRICS: dict[str, Metric] = {m.name: m for m in _METRICS}
#: Objectives computed against the latency constraints of the goal.
GOODPUT = ("goodput", "goodput_tokens_per_s")
THROUGHPUT_METRIC = METRICS["output_tokens_per_s"]


def metric(name: str) -> Metric:
    """The metric called `name` (goodput aside: it needs constraints, see `Goal`)."""
    found = METRICS.get(name)
    if found is None:
        known = ", ".join([*GOODPUT, *(n for n in METRICS if not n.endswith("_ms"))])
        raise TunerError(
            f"unknown metric {name!r}; known: {known}, and latency percentiles "
            f"{{ttft,itl,e2e}}_{{mean,p50,p90,p99}}_ms"
        )
    return found


# -- constraints -----------------------------------------------------------------------------

_CONSTRAINT = re.compile(r"^\s*([a-z0-9_]+)\s*(<=|>=)\s*([0-9.eE+-]+)\s*$")


@dataclass(frozen=True)
class Constraint:
    """A limit on a metric: `ttft_p99_ms<=500`, `output_tokens_per_s>=100`."""

    metric: Metric
    op: Literal["<=", ">="]
    limit: float

    @classmethod
    def parse(cls, text: str) -> Constraint:
        """`name<=value` or `name>=value`; one line saying what is wrong otherwise."""
        found = _CONSTRAINT.match(text)
        if found is None:
            raise TunerError(
                f"cannot read the limit {text!r}: write it as metric<=value, e.g. ttft_p99_ms<=500"
            )
        name, op, number = found.groups()
        try:
            limit = float(number)
        except ValueError:
            raise TunerError(
                f"cannot read the limit {text!r}: {number!r} is not a number"
            ) from None
        found_metric = metric(name)
        # Every metric is a count, a rate, a time or an energy: never below zero.
        if not math.isfinite(limit):
            raise TunerError(f"cannot read the limit {text!r}: {number!r} is not a finite number")
        if op == "<=" and limit <= 0:
            raise TunerError(
                f"the limit {text!r} can never be met ({name} is never negative): give a "
                "limit above 0"
            )
        if limit < 0:
            raise TunerError(
                f"the limit {text!r} says nothing ({name} is never negative): give 0 or more"
            )
        return cls(found_metric, op, limit)  # type: ignore[arg-type]

    @property
    def text(self) -> str:
        return f"{self.metric.name}{self.op}{self.limit:g}"

    def breach(self, m: Measurement | None, *, robust: bool = False) -> str | None:
        """Why the measurement breaks the limit ("p99 TTFT 812 ms > 500 ms"), or None. With
        `robust`, the figure is first moved against the limit by its own spread over the
        timed runs (x (1 + cv) under an upper limit): a configuration is chosen only when it
        keeps the limit by more than its measurement's noise."""
        value = self.metric.of(m)
        if value is None:
            return f"no {self.metric.label} figure to hold to {self.text}"
        spread = self.metric.spread(m) if robust else 0.0
        moved = value * (1 + spread) if self.op == "<=" else value * (1 - spread)
        broken = moved > self.limit if self.op == "<=" else moved < self.limit
        if not broken:
            return None
        other = ">" if self.op == "<=" else "<"
        shown = self.metric.fmt(value)
        if moved != value:
            shown += f" (with its {spread:.0%} spread, {self.metric.fmt(moved)})"
        return f"{self.metric.label} {shown} {other} {self.metric.fmt(self.limit)}"


# -- goals -----------------------------------------------------------------------------------


def _goodput(name: str, limits: dict[str, float], count_tokens: bool) -> Metric:
    """Requests/s (or their output tok/s) of the requests within every latency limit."""

    def figure(run: Run) -> float | None:
        p = run.per_request
        if p is None or run.elapsed_s <= 0:
            return None
        good = 0.0
        for ttft, tpot, e2e, tokens in zip(
            p.ttft_ms, p.tpot_ms, p.e2e_ms, p.output_tokens, strict=True
        ):
            if (
                ttft <= limits.get("ttft", float("inf"))
                and tpot <= limits.get("itl", float("inf"))
                and e2e <= limits.get("e2e", float("inf"))
            ):
                good += tokens if count_tokens else 1
        return good * p.alike / run.elapsed_s

    label = "goodput (output tok/s)" if count_tokens else "goodput (req/s)"
    return Metric(name, label, "tok/s" if count_tokens else "req/s", True, figure, "latency")


def request_limits(constraints: Sequence[Constraint]) -> dict[str, float]:
    """Per latency kind (ttft, itl, e2e), the tightest upper limit the constraints set: what
    each request must keep to count towards goodput."""
    limits: dict[str, float] = {}
    for c in constraints:
        kind = c.metric.name.split("_")[0]
        if c.metric.needs == "latency" and c.op == "<=":
            limits[kind] = min(limits.get(kind, float("inf")), c.limit)
    return limits


@dataclass(frozen=True)
class Goal:
    """One objective or several, and the constraints a configuration must keep."""

    objectives: tuple[Metric, ...]
    constraints: tuple[Constraint, ...] = ()

    @property
    def primary(self) -> Metric:
        """The first objective: the one a single pick (the profile's `best`) is ranked by."""
        return self.objectives[0]

    @property
    def name(self) -> str:
        return self.primary.name

    @property
    def label(self) -> str:
        return self.primary.label

    @property
    def maximize(self) -> bool:
        return self.primary.maximize

    @property
    def multi(self) -> bool:
        return len(self.objectives) > 1

    @property
    def needs(self) -> set[str]:
        """What the engine or machine must report for this goal to be judged."""
        used = [*self.objectives, *(c.metric for c in self.constraints)]
        return {m.needs for m in used if m.needs is not None}

    def of(self, measurement: Measurement | None) -> float | None:
        """The primary figure of a measurement (a trial's, a profile's), None without one."""
        return self.primary.of(measurement)

    def value(self, result: TrialResult) -> float | None:
        """The trial's primary figure, feasible or not (None when it has none)."""
        return self.of(result.measurement)

    def breaches(self, measurement: Measurement | None, *, robust: bool = False) -> list[str]:
        """The constraints a measurement breaks, in words (`robust`: see `Constraint.breach`)."""
        return [
            b for c in self.constraints if (b := c.breach(measurement, robust=robust)) is not None
        ]

    def pressure(self, measurement: Measurement | None) -> float | None:
        """How hard a measurement presses the limits: the largest of its figures over its
        limit (an upper limit's figure / limit, a lower limit's limit / figure), above 1 where a
        limit is broken; None without limits or figures."""
        ratios = []
        for c in self.constraints:
            value = c.metric.of(measurement)
            if value is None:
                continue
            if c.op == "<=":
                ratios.append(value / c.limit)
            else:
                ratios.append(c.limit / value if value > 0 else math.inf)
        return max(ratios) if ratios else None

    def feasible(self, result: TrialResult, *, robust: bool = False) -> str | None:
        """Why the trial cannot count, or None when it can; with `robust`, it must keep every
        limit by more than its spread (what a study's choice asks)."""
        if result.status != "ok":
            return f"{result.status}: {result.reason}" if result.reason else result.status
        m = result.measurement
        if m is None or m.output_tokens_per_s.median <= 0:
            return "no output token was measured: not a measurement"
        if m.failed_requests:
            done = sum(r.requests for r in m.runs)
            return (
                f"{m.failed_requests} of {done + m.failed_requests} requests failed "
                f"({'; '.join(m.failures)})"
            )
        for objective in self.objectives:
            if objective.of(m) is None:
                return f"no {objective.label} figure"
        broken = self.breaches(m, robust=robust)
        return "; ".join(broken) if broken else None

    def score(self, result: TrialResult) -> float | None:
        """The primary figure of a feasible trial; None for any other."""
        return None if self.feasible(result) is not None else self.value(result)

    def loss(self, result: TrialResult) -> float | None:
        """What a single-objective optimizer minimizes: the primary score, negated when
        larger is better."""
        score = self.score(result)
        if score is None:
            return None
        return -score if self.maximize else score

    def losses(self, result: TrialResult) -> tuple[float, ...] | None:
        """Every objective as a loss (lower is better), None for an infeasible trial."""
        if self.feasible(result) is not None:
            return None
        m = result.measurement
        values = [(o, o.of(m)) for o in self.objectives]
        return tuple(-v if o.maximize else v for o, v in values if v is not None)

    def pessimistic(self, result: TrialResult) -> float | None:
        """The primary score moved against the trial by its spread (the coefficient of
        variation of its timed repeats); None for an infeasible trial."""
        score = self.score(result)
        if score is None:
            return None
        spread = self.primary.spread(result.measurement)
        return score * (1 - spread) if self.maximize else score * (1 + spread)

    def ranked(self, results: Sequence[TrialResult], *, robust: bool = True) -> list[TrialResult]:
        """The feasible trials, best first (the earlier first on a tie). With `robust` (a
        study's choice): by pessimistic estimate, among the trials that keep every limit by
        more than their spread; else by score (a table's optimum)."""
        rank = self.pessimistic if robust else self.score
        scored = [
            (r, v)
            for r in results
            if (v := rank(r)) is not None
            and (not robust or not self.constraints or self.feasible(r, robust=True) is None)
        ]
        scored.sort(key=lambda rv: rv[1], reverse=self.maximize)  # stable: ties keep order
        return [r for r, _ in scored]

    def best(self, results: Sequence[TrialResult], *, robust: bool = True) -> TrialResult | None:
        """The first of `ranked`, or None when no trial is feasible."""
        return next(iter(self.ranked(results, robust=robust)), None)

    def front(self, results: Sequence[TrialResult]) -> list[TrialResult]:
        """The feasible trials no other feasible trial dominates (as good in every objective
        and better in one), ordered by the primary objective, best first; one trial per
        configuration (its latest measurement)."""
        latest: dict[str, tuple[TrialResult, tuple[float, ...]]] = {}
        for r in results:
            losses = self.losses(r)
            if losses is not None:
                latest[_key(r)] = (r, losses)
        points = list(latest.values())
        kept = [(r, a) for r, a in points if not any(_dominates(b, a) for _, b in points)]
        return [r for r, _ in sorted(kept, key=lambda ra: ra[1][0])]


def _key(result: TrialResult) -> str:
    return repr(sorted(result.knobs.items()))


def _dominates(a: Sequence[float], b: Sequence[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=True)) and any(
        x < y for x, y in zip(a, b, strict=True)
    )


def goal_options(
    objectives: Sequence[str] | None,
    slo: Sequence[str] | None,
    max_memory_mib: float | None = None,
    max_power_w: float | None = None,
    max_joules_per_token: float | None = None,
) -> tuple[list[str], list[str]]:
    """The objectives and constraints as a study spec keeps them, from `tuner tune`'s
    `--objective`, `--slo` and `--max-*` options; checked (one line)."""
    limits = {
        "peak_memory_mib": max_memory_mib,
        "peak_power_w": max_power_w,
        "joules_per_token": max_joules_per_token,
    }
    constraints = [*(slo or []), *(f"{n}<={v:g}" for n, v in limits.items() if v is not None)]
    names = list(objectives or ["output_tokens_per_s"])
    return names, [c.text for c in goal(names, constraints).constraints]


def goal(
    objectives: Sequence[str] = ("output_tokens_per_s",), constraints: Sequence[str] = ()
) -> Goal:
    """The goal of a study: objectives by name, constraints as text (`ttft_p99_ms<=500`).
    One line when a name is unknown, or goodput has no latency limit to count against."""
    if not objectives:
        raise TunerError("a study needs an objective")
    if len(set(objectives)) != len(objectives):
        raise TunerError(f"an objective is named twice: {', '.join(objectives)}")
    parsed = tuple(Constraint.parse(c) for c in constraints)
    limits = request_limits(parsed)
    chosen: list[Metric] = []
    for name in objectives:
        if name in GOODPUT:
            if not limits:
                raise TunerError(
                    f"{name} counts the requests that meet a latency limit: give one, "
                    "e.g. --slo ttft_p99_ms<=500"
                )
            chosen.append(_goodput(name, limits, count_tokens=name != "goodput"))
        else:
            chosen.append(metric(name))
    return Goal(tuple(chosen), parsed)


THROUGHPUT = Goal((THROUGHPUT_METRIC,))


def one_objective_to_many(data: Any) -> Any:
    """A record (a study spec, a profile) written when a study had one objective, named
    `objective`, as one with `objectives`: for their pydantic models' before-validators."""
    if isinstance(data, dict) and "objective" in data:
        data = {**data, "objectives": [data["objective"]]}
        del data["objective"]
    return data


def winner(goal: Goal, results: Sequence[TrialResult]) -> TrialResult | None:
    """A study's pick: the best of its confirmation trials (origin `confirm`: the best
    configurations measured again on fresh repeats after the search) where there are feasible
    ones, else the best of all its trials."""
    confirmed = goal.best([r for r in results if r.origin == CONFIRM])
    return confirmed or goal.best(results)


def prediction_error(results: Sequence[TrialResult], figures: Sequence[str]) -> dict[str, float]:
    """The median absolute percentage error of the predictions kept beside measured trials,
    per figure (a metric name of `tuner.measure.objective`), over the trials that have both."""
    errors: dict[str, float] = {}
    for name in figures:
        found = metric(name)
        pairs = [
            (found.of(r.prediction.measurement), found.of(r.measurement))
            for r in results
            if r.status == "ok" and r.prediction is not None and r.prediction.measurement
        ]
        apes = [abs(p - m) / m * 100 for p, m in pairs if p is not None and m]
        if apes:
            errors[name] = round(statistics.median(apes), 1)
    return errors
