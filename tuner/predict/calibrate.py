"""Predictions corrected by measurements: a prior that learns.

A performance model is off by a factor that depends on the configuration (AIConfigurator
over-predicts vLLM's throughput, more so at high load; its TTFT error on NVIDIA's own tables is
12-175%). `Calibration` fits, per figure (output tok/s, TTFT, time per output token), the log
of measured / predicted as a linear function of the configuration's features (each knob the
prior reads: log2 of a number, 1/0 for a switch or a non-default choice; and, across tables,
log2 of the prompt and output lengths; for TTFT, also log2 of the prompt tokens in flight above
a knee, `KNEE_TOKENS`), by Bayesian linear regression:

- features are centred on the configurations to be judged, so the intercept is the average
  correction and a slope says how the error changes with the knob;
- the intercept's prior is N(0, 1) (a factor of e either way), each slope's N(0, `SLOPE_SD` /
  the feature's spread): with few measurements the correction is mostly the intercept, and
  slopes earn their size from the data;
- the noise is 5% (log 0.05), or the residuals' spread where it is larger.

Each corrected prediction has a mean and a standard deviation (the posterior's, with the
noise). `Calibrator` is what a study uses: after each measured trial it refits and proposes the
configuration not yet measured with the best expected figure under the limits, the expected
figure being the corrected one times the probability that every limit holds (each limit judged
on its figure's corrected log-normal).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from tuner.measure.measurement import Measurement, PerRequest, Run
from tuner.measure.objective import Goal, metric
from tuner.measure.trial import Prediction, PriorPlan, TrialResult
from tuner.specs.knobs import Value

#: The figures corrected: a name, and the metric whose ratio measured / predicted is fitted.
FIGURES = {"throughput": "output_tokens_per_s", "ttft": "ttft_p99_ms", "tpot": "itl_p99_ms"}
INTERCEPT_SD = 1.0
#: A slope's prior spread, per unit of the feature's spread over the configurations judged.
SLOPE_SD = 0.15
#: The same for the prompt and output lengths (points of several tables fitted together).
CONTEXT_SD = 0.5
#: The knee's (see `KNEE_TOKENS`), per figure: only TTFT bends.
KNEE_SD = {"ttft": 1.0, "throughput": 0.0, "tpot": 0.0}
NOISE_SD = 0.05
#: Prompt tokens in flight (the load times the prompt length) above which TTFT gets a second
#: feature, log2(tokens / knee): the measured TTFT rises above the model's past it (queueing
#: the model leaves out). Chosen on the silicon tables' tuning half with the spreads above:
#: 17 of 21 tables at 95% within 3 calibrated starts (13 without the knee), the error of
#: tok/s after 3 trials 8.6% -> 4.3% (see reports/prior.md).
KNEE_TOKENS = 32 * 1024
#: String values that mean "the engine's own choice" (0 as a feature; any other is 1).
DEFAULT_WORDS = frozenset({"auto", "none", "", "default"})


def feature(value: Value | None) -> float:
    """A knob's value as a number: log2 of a positive number, 1/0 for a switch, 0 for an
    engine default word and 1 for any other choice."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return math.log2(value) if value > 0 else 0.0
    if value is None:
        return 0.0
    return 0.0 if str(value).lower() in DEFAULT_WORDS else 1.0


@dataclass
class Point:
    """One configuration: its predicted figures (and the predicted measurement they come
    from), its measured ones once measured, and the table's context (prompt and output
    lengths) where points of several tables are fitted together."""

    knobs: Mapping[str, Value]
    predicted: Mapping[str, float]
    measured: Mapping[str, float] | None = None
    context: Mapping[str, float] = field(default_factory=dict)
    measurement: Measurement | None = None


def figures(measurement: Measurement | None) -> dict[str, float]:
    """The corrected figures of a measurement that has them (positive)."""
    found: dict[str, float] = {}
    for name, metric_name in FIGURES.items():
        value = metric(metric_name).of(measurement)
        if value is not None and value > 0:
            found[name] = value
    return found


class Correction:
    """log(measured / predicted) of one figure as a linear function of centred features."""

    def __init__(self, centre: np.ndarray, scale: np.ndarray, slopes: np.ndarray) -> None:
        self.centre = centre
        sds = np.concatenate([[INTERCEPT_SD], slopes / np.maximum(scale, 1e-9)])
        sds[1:][scale < 1e-9] = 0.0  # a feature that never changes says nothing
        self.prior_var = np.maximum(sds, 1e-9) ** 2
        self.mean = np.zeros(len(sds))
        self.cov = np.diag(self.prior_var)
        self.noise = NOISE_SD

    def design(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([[1.0], x - self.centre])

    def fit(self, xs: Sequence[np.ndarray], ys: Sequence[float]) -> None:
        if not ys:
            return
        design = np.array([self.design(x) for x in xs])
        y = np.array(ys)
        noise = NOISE_SD
        for _ in range(2):  # the noise: at least NOISE_SD, else the residuals' spread
            precision = design.T @ design / noise**2 + np.diag(1 / self.prior_var)
            cov = np.linalg.inv(precision)
            mean = cov @ design.T @ y / noise**2
            residual = y - design @ mean
            spread = float(np.sqrt(np.mean(residual**2))) if len(ys) > 2 else 0.0
            if spread <= noise:
                break
            noise = spread
        self.mean, self.cov, self.noise = mean, cov, noise

    def at(self, x: np.ndarray) -> tuple[float, float]:
        """The correction's mean and standard deviation (log units) at features `x`."""
        d = self.design(x)
        return float(d @ self.mean), math.sqrt(float(d @ self.cov @ d) + self.noise**2)


class Calibration:
    """Corrections of a prior's figures, fitted on measured points and centred on `judged`
    (the configurations whose predictions are to be corrected)."""

    def __init__(
        self, names: Sequence[str], judged: Sequence[Point], load: str | None = None
    ) -> None:
        self.names, self.load = list(names), load
        self.context_names = sorted({n for p in judged for n in p.context})
        rows = np.array([self.x(p) for p in judged]) if judged else np.zeros((1, self.width))
        centre, scale = rows.mean(axis=0), rows.std(axis=0)

        def slopes(figure: str) -> np.ndarray:
            knee = KNEE_SD.get(figure, 0.0)
            return np.array(
                [SLOPE_SD] * len(self.names)
                + [CONTEXT_SD] * len(self.context_names)
                + [knee] * (self.load is not None)
            )

        self.corrections = {f: Correction(centre, scale, slopes(f)) for f in FIGURES}

    @property
    def width(self) -> int:
        return len(self.names) + len(self.context_names) + (self.load is not None)

    def x(self, point: Point) -> np.ndarray:
        found = [feature(point.knobs.get(n)) for n in self.names]
        found += [math.log2(max(point.context.get(n, 1.0), 1e-9)) for n in self.context_names]
        if self.load is not None:
            # Prompt tokens in flight: the load times the prompt length (1 where unknown).
            tokens = feature(point.knobs.get(self.load)) + math.log2(point.context.get("isl", 1))
            found.append(max(0.0, tokens - math.log2(KNEE_TOKENS)))
        return np.array(found)

    def fit(self, measured: Sequence[Point]) -> Calibration:
        for name, correction in self.corrections.items():
            pairs = [
                (self.x(p), math.log(p.measured[name] / p.predicted[name]))
                for p in measured
                if p.measured and name in p.measured and name in p.predicted
            ]
            correction.fit([x for x, _ in pairs], [y for _, y in pairs])
        return self

    def factors(self, point: Point) -> dict[str, tuple[float, float]]:
        """Per figure, the correction's (mean, sd) in log units at `point`."""
        x = self.x(point)
        return {name: c.at(x) for name, c in self.corrections.items()}

    def corrected(self, point: Point) -> dict[str, float]:
        """`point`'s predicted figures, corrected (the mean of the log correction)."""
        factors = self.factors(point)
        return {n: v * math.exp(factors[n][0]) for n, v in point.predicted.items()}

    def prediction(self, point: Point, found: Prediction, by: str) -> Prediction:
        """`found` (the prediction `point` was made from) with its measurement corrected, as
        predicted `by`."""
        assert found.measurement is not None
        factors = _means(self.factors(point))
        measurement = scaled_measurement(found.measurement, factors)
        return found.model_copy(update={"by": by, "measurement": measurement})


def scaled_measurement(m: Measurement, factors: Mapping[str, float]) -> Measurement:
    """A predicted measurement with its throughput, TTFT and time per output token multiplied
    by `factors` (the end-to-end latency follows the throughput)."""
    tput, ttft, tpot = (factors.get(f, 1.0) for f in ("throughput", "ttft", "tpot"))

    def run(r: Run) -> Run:
        latency = r.latency
        if latency is not None:  # the end-to-end latency follows the throughput
            latency = latency.times(ttft, tpot, 1 / tput)
        per = r.per_request
        if per is not None:
            per = PerRequest(
                ttft_ms=[v * ttft for v in per.ttft_ms],
                tpot_ms=[v * tpot for v in per.tpot_ms],
                e2e_ms=[v / tput for v in per.e2e_ms],
                output_tokens=per.output_tokens,
                alike=per.alike,
            )
        return r.model_copy(
            update={"elapsed_s": r.elapsed_s / tput, "latency": latency, "per_request": per}
        )

    return Measurement.from_runs(run(m.cold), [run(r) for r in m.runs])


# -- in a study ---------------------------------------------------------------------------------


class Calibrator:
    """A study's prior, corrected by each of its measured trials (see the module's docstring):
    `next` is the configuration to measure next."""

    def __init__(
        self,
        plan: PriorPlan,
        goal: Goal,
        load: str | None = None,
        context: Mapping[str, float] | None = None,
    ) -> None:
        self.plan, self.goal, self.load = plan, goal, load
        self.context = dict(context or {})
        self.points = [
            Point(
                p.knobs,
                figures(p.prediction.measurement),
                context=self.context,
                measurement=p.prediction.measurement,
            )
            for p in plan.predicted
            if p.prediction.status == "ok" and p.prediction.measurement is not None
        ]
        self.measured: list[Point] = []

    def add(self, result: TrialResult) -> None:
        """A measured trial: its figures beside its prediction."""
        if result.status != "ok" or result.measurement is None:
            return
        found = self.plan.prediction(dict(result.knobs))
        if found is None or found.status != "ok" or found.measurement is None:
            return
        measured = figures(result.measurement)
        predicted = figures(found.measurement)
        self.measured.append(Point(result.knobs, predicted, measured, self.context))

    def calibration(self) -> Calibration:
        return Calibration(self.plan.covers, self.points, self.load).fit(self.measured)

    def next(self, known: Callable[[dict[str, Value]], bool]) -> dict[str, Value] | None:
        """The configuration not yet `known` with the best expected figure: the prior's own
        best while nothing is measured, else the corrected one's."""
        if not self.measured:
            left = [s for s in self.plan.starts if not known(dict(s))]
            return dict(left[0]) if left else None
        calibration = self.calibration()
        scored = [
            (value, i)
            for i, p in enumerate(self.points)
            if not known(dict(p.knobs)) and (value := expected(self.goal, calibration, p))
        ]
        if not scored:
            return None
        best = max(scored) if self.goal.maximize else min(scored)
        return dict(self.points[best[1]].knobs)

    def prediction(self, knobs: Mapping[str, Value]) -> Prediction | None:
        """The prior's prediction for `knobs`, corrected by what is measured so far."""
        found = self.plan.prediction(dict(knobs))
        if found is None or found.measurement is None or not self.measured:
            return found
        point = Point(knobs, figures(found.measurement), context=self.context)
        by = f"{found.by}, corrected by {len(self.measured)} measured"
        return self.calibration().prediction(point, found, by)


def _means(factors: Mapping[str, tuple[float, float]]) -> dict[str, float]:
    return {name: math.exp(mean) for name, (mean, _) in factors.items()}


def keep_probability(goal: Goal, factors: Mapping[str, tuple[float, float]], point: Point) -> float:
    """The probability that every limit of `goal` holds at `point`, each figure log-normal
    around its corrected prediction (`factors`: the calibration's at `point`); a limit on a
    figure the calibration does not correct counts as kept."""
    probability = 1.0
    for c in goal.constraints:
        name = _figure_of(c.metric.name)
        if name is None:
            continue
        # The limit's own figure (tok/s per GPU, a TTFT percentile...), as predicted.
        raw = c.metric.of(point.measurement) if point.measurement else point.predicted.get(name)
        if not raw:
            continue
        mean, sd = factors[name]
        z = (math.log(c.limit) - (math.log(raw) + mean)) / sd
        probability *= _phi(z) if c.op == "<=" else 1 - _phi(z)
    return probability


def expected(goal: Goal, calibration: Calibration, point: Point) -> float | None:
    """The goal's figure at `point`, corrected, times the probability that every limit holds
    (for a figure to minimize: divided by it); None without a predicted measurement."""
    if point.measurement is None:
        return None
    factors = calibration.factors(point)
    value = goal.of(scaled_measurement(point.measurement, _means(factors)))
    if not value:
        return None
    p = keep_probability(goal, factors, point)
    return value * p if goal.maximize else value / max(p, 1e-9)


def _figure_of(metric_name: str) -> str | None:
    if metric_name.startswith("ttft"):
        return "ttft"
    if metric_name.startswith(("itl", "tpot")):
        return "tpot"
    if "tokens_per_s" in metric_name:
        return "throughput"
    return None


def _phi(z: float) -> float:
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))
