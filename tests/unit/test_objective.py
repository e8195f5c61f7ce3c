"""The goal: objectives, limits, what counts and what wins."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tuner.errors import TunerError
from tuner.hardware.telemetry import Telemetry
from tuner.measure.measurement import Latency, Measurement, PerRequest, Run, percentiles
from tuner.measure.objective import THROUGHPUT, Constraint, goal
from tuner.measure.trial import TrialResult
from tuner.testing import surface_result


def ok(number: int, batch: int, *, cv: float = 0.01):  # type: ignore[no-untyped-def]
    """The fake surface's trial, its three timed runs spread by `cv` around the same median."""
    knobs = {"batch_size": batch, "kernel": "fused", "cache": "static"}
    r = surface_result(number, "search", knobs)
    assert r.measurement is not None
    run = r.measurement.runs[0]
    runs = [run.model_copy(update={"elapsed_s": run.elapsed_s / f}) for f in (1 - cv, 1, 1 + cv)]
    return r.model_copy(update={"measurement": Measurement.from_runs(run, runs)})


def served(
    number: int,
    *,
    ttft_ms: list[float],
    tokens: int = 10,
    elapsed_s: float = 1.0,
    energy_j: float | None = None,
) -> TrialResult:
    """A streamed trial: each request's TTFT given, 10 ms per token after it."""
    tpot = [10.0] * len(ttft_ms)
    e2e = [t + 10.0 * (tokens - 1) for t in ttft_ms]
    telemetry = None
    if energy_j is not None:
        telemetry = Telemetry(
            window_s=elapsed_s,
            gpus=[],
            energy_j=energy_j,
            avg_power_w=energy_j / elapsed_s,
            peak_power_w=energy_j / elapsed_s,
            peak_memory_mib=1000.0,
            throttled=False,
        )
    run = Run(
        elapsed_s=elapsed_s,
        requests=len(ttft_ms),
        input_tokens=0,
        output_tokens=tokens * len(ttft_ms),
        truncated=False,
        telemetry=telemetry,
        latency=Latency(
            ttft=percentiles([t / 1000 for t in ttft_ms]),
            itl=percentiles([0.01]),
            e2e=percentiles([t / 1000 for t in e2e]),
        ),
        per_request=PerRequest(
            ttft_ms=ttft_ms, tpot_ms=tpot, e2e_ms=e2e, output_tokens=[tokens] * len(ttft_ms)
        ),
    )
    return TrialResult(
        number=number,
        origin="search",
        knobs={"batch_size": number},
        status="ok",
        measurement=Measurement.from_runs(run, [run] * 3),
        wall_s=1.0,
        started_at=datetime.now(UTC),
    )


def test_a_spread_trial_wins_only_by_more_than_its_spread() -> None:
    # A 26% spread (seen in a study) no longer wins over a steady trial 4% slower; throttling
    # alone counts for nothing.
    slow, fast_but_spread, fast = ok(0, 1), ok(1, 64, cv=0.26), ok(2, 32)
    assert THROUGHPUT.value(fast_but_spread) > THROUGHPUT.value(fast)  # type: ignore[operator]
    assert THROUGHPUT.best([slow, fast_but_spread, fast]) == fast
    # ... but it does over a steady trial far slower (a noisy CPU: most trials spread).
    assert THROUGHPUT.best([slow, fast_but_spread]) == fast_but_spread
    # A table's optimum is its best score, however it spread.
    assert THROUGHPUT.best([slow, fast_but_spread, fast], robust=False) == fast_but_spread


def test_failed_trials_are_infeasible_with_their_reason() -> None:
    oom = surface_result(3, "search", {"batch_size": 256, "kernel": "basic", "cache": "static"})
    assert oom.status == "oom"
    assert THROUGHPUT.feasible(oom) == "oom: fake engine: does not fit"
    assert THROUGHPUT.score(oom) is None and THROUGHPUT.losses(oom) is None
    good = ok(0, 32)
    assert THROUGHPUT.feasible(good) is None
    assert THROUGHPUT.losses(good) == (-THROUGHPUT.score(good),)  # type: ignore[operator]
    assert THROUGHPUT.best([oom]) is None


def test_an_slo_breach_is_infeasible_with_its_reason_in_words() -> None:
    slo = goal(constraints=["ttft_p99_ms<=500"])
    fast_but_late = served(1, ttft_ms=[100.0] * 9 + [900.0])
    in_time = served(2, ttft_ms=[100.0] * 10, elapsed_s=2.0)
    reason = slo.feasible(fast_but_late)
    assert reason is not None and reason.startswith("p99 TTFT 8")
    assert reason.endswith(" ms > 500 ms")
    assert slo.losses(fast_but_late) is None
    assert slo.feasible(in_time) is None
    # Unconstrained, the late one is faster; within the limit, only the other counts.
    assert THROUGHPUT.best([fast_but_late, in_time]) == fast_but_late
    assert slo.best([fast_but_late, in_time]) == in_time


def test_pressure_is_the_most_pressed_limit_as_a_ratio() -> None:
    both = goal(constraints=["ttft_p99_ms<=400", "itl_p99_ms<=20"])
    late = served(1, ttft_ms=[100.0] * 9 + [800.0])  # TTFT p99 near 800: 2x its limit
    pressure = both.pressure(late.measurement)
    assert pressure is not None and 1.8 < pressure <= 2.0
    in_time = served(2, ttft_ms=[100.0] * 10)  # TTFT 100 ms; ITL 10 ms: half its limit
    assert both.pressure(in_time.measurement) == pytest.approx(0.5)
    floor = goal(constraints=["output_tokens_per_s>=200"])  # a lower limit: limit / figure
    assert floor.pressure(in_time.measurement) == pytest.approx(2.0)  # 100 tok/s
    assert THROUGHPUT.pressure(in_time.measurement) is None  # no limits


def test_a_limit_without_its_figure_is_infeasible_and_says_so() -> None:
    limit = goal(constraints=["peak_power_w<=300"])
    reason = limit.feasible(ok(0, 32))
    assert reason == "no peak power figure to hold to peak_power_w<=300"


def test_goodput_counts_only_the_requests_within_every_limit() -> None:
    g = goal(["goodput", "goodput_tokens_per_s"], ["ttft_p99_ms<=500", "e2e_p99_ms<=500"])
    # 10 requests in 2 s: four have TTFT over 500 ms; one more starts in time (450 ms) but
    # ends 90 ms later, past 500 ms end to end.
    trial = served(1, ttft_ms=[100.0] * 5 + [450.0, 600.0, 900.0, 950.0, 1000.0], elapsed_s=2.0)
    goodput, tokens = (o.of(trial.measurement) for o in g.objectives)
    assert goodput == pytest.approx(5 / 2.0)
    assert tokens == pytest.approx(5 * 10 / 2.0)


def test_goodput_needs_a_latency_limit() -> None:
    with pytest.raises(TunerError, match="goodput counts the requests that meet a latency limit"):
        goal(["goodput"])


def test_limits_read_in_one_line_or_fail_in_one() -> None:
    c = Constraint.parse(" itl_p90_ms <= 50 ")
    assert (c.metric.name, c.op, c.limit, c.text) == ("itl_p90_ms", "<=", 50.0, "itl_p90_ms<=50")
    assert Constraint.parse("output_tokens_per_s>=1e3").limit == 1000.0
    with pytest.raises(TunerError, match="write it as metric<=value"):
        Constraint.parse("ttft under 500")
    with pytest.raises(TunerError, match="unknown metric 'ttft_p95_ms'"):
        Constraint.parse("ttft_p95_ms<=500")
    with pytest.raises(TunerError, match="unknown metric 'speed'"):
        goal(["speed"])


def test_the_pareto_front_is_mutually_non_dominated() -> None:
    g = goal(["output_tokens_per_s", "joules_per_token"])
    # (output tok/s, J/token): 100 tokens per run of 1 s, energies chosen to cross.
    trials = [
        served(n, ttft_ms=[10.0] * 10, elapsed_s=elapsed, energy_j=energy)
        for n, (elapsed, energy) in enumerate(
            [(1.0, 50.0), (0.5, 80.0), (0.25, 200.0), (0.5, 300.0), (2.0, 40.0), (2.0, 60.0)]
        )
    ]
    front = g.front(trials)
    assert [t.number for t in front] == [2, 1, 0, 4]  # fastest first
    values = [[o.of(t.measurement) for o in g.objectives] for t in front]
    for a in values:
        for b in values:
            if a is not b:
                # b is not at least as fast with no more energy per token and better in one.
                assert not (b[0] >= a[0] and b[1] <= a[1] and (b[0] > a[0] or b[1] < a[1]))
    dominated = {3, 5}
    assert dominated.isdisjoint(t.number for t in front)


def test_a_study_chooses_only_what_keeps_a_limit_by_more_than_its_spread() -> None:
    slo = goal(constraints=["ttft_p99_ms<=500"])
    runs = [served(0, ttft_ms=[t] * 10).measurement.runs[0] for t in (300.0, 450.0, 600.0)]  # type: ignore[union-attr]
    wobbly = served(1, ttft_ms=[450.0] * 10, elapsed_s=0.5).model_copy(
        update={"measurement": Measurement.from_runs(runs[0], runs)}
    )
    steady = served(2, ttft_ms=[480.0] * 10, elapsed_s=2.0)
    # Its median keeps the limit; moved by its 33% spread, it does not.
    assert slo.feasible(wobbly) is None
    reason = slo.feasible(wobbly, robust=True)
    assert reason is not None and "(with its 33% spread, 600 ms) > 500 ms" in reason
    assert slo.best([wobbly, steady]) == steady
    assert slo.best([wobbly]) is None and slo.best([wobbly], robust=False) == wobbly
