from __future__ import annotations

import math
import statistics

import pytest
from pydantic import ValidationError

from tuner.engines.base import REQUEST_RATE, RequestTiming, RunOutput
from tuner.measure.measurement import (
    Measurement,
    MeasurementProtocol,
    Run,
    measure,
    measure_max_rate,
    stats,
)
from tuner.measure.objective import goal
from tuner.specs.workloads import Request
from tuner.testing import FakeClock, ScriptedEngine

REQUESTS = [Request((1, 2, 3, 4), 10, "p")] * 5  # 20 input, 50 output tokens a run


def test_stats_arithmetic() -> None:
    s = stats([100.0, 110.0, 90.0, 130.0])
    assert s.median == 105.0
    assert s.mean == 107.5
    assert s.stdev == pytest.approx(statistics.stdev([100, 110, 90, 130]))
    assert s.cv == pytest.approx(s.stdev / 107.5)
    assert (s.min, s.max) == (90.0, 130.0)
    assert stats([5.0]).cv == 0.0
    assert stats([0.0, 0.0, 0.0]).cv == 0.0
    with pytest.raises(ValueError):
        stats([])


def test_run_rates() -> None:
    run = Run(elapsed_s=2.0, requests=5, input_tokens=20, output_tokens=50, truncated=False)
    assert run.output_tokens_per_s == 25.0
    assert run.total_tokens_per_s == 35.0
    assert (
        Run(
            elapsed_s=0, requests=0, input_tokens=0, output_tokens=0, truncated=True
        ).output_tokens_per_s
        == 0.0
    )


def test_measure_reports_cold_run_apart_and_takes_the_median_of_repeats() -> None:
    clock = FakeClock()
    # Cold run 10 s (compilation), then three warm runs of 1, 2 and 4 s.
    engine = ScriptedEngine(clock, [10.0, 1.0, 2.0, 4.0], tokens_per_request=10)
    stages: list[str] = []
    protocol = MeasurementProtocol(repeats=3, max_remeasures=0)
    m = measure(engine, REQUESTS, {}, protocol, clock=clock, progress=stages.append)
    assert stages == ["warm-up", "run 1/3", "run 2/3", "run 3/3"]
    assert m.cold.elapsed_s == 10.0 and m.cold.output_tokens_per_s == 5.0
    assert [r.elapsed_s for r in m.runs] == [1.0, 2.0, 4.0]
    assert m.output_tokens_per_s.median == 25.0  # 50 tokens in 2 s
    assert m.output_tokens_per_s.max == 50.0 and m.output_tokens_per_s.min == 12.5
    assert m.total_tokens_per_s.median == 35.0
    assert not m.truncated


def test_measure_flags_runs_that_did_not_finish() -> None:
    clock = FakeClock()

    class Partial(ScriptedEngine):
        def run(self, prepared, deadline):  # type: ignore[no-untyped-def]
            out = super().run(prepared[:2], deadline)
            return out

    m = measure(Partial(clock, [1.0] * 4, 10), REQUESTS, {}, MeasurementProtocol(), clock=clock)
    assert m.truncated and all(r.truncated and r.requests == 2 for r in m.runs)
    assert m.output_tokens_per_s.median == 20.0  # scored from the 20 tokens completed


def test_protocol_requires_at_least_three_repeats() -> None:
    with pytest.raises(ValidationError):
        MeasurementProtocol(repeats=2)
    assert MeasurementProtocol().repeats == 3


def test_measurement_survives_json() -> None:
    clock = FakeClock()
    m = measure(
        ScriptedEngine(clock, [3.0, 1.0, 1.0, 1.0], 10),
        REQUESTS,
        {},
        MeasurementProtocol(),
        clock=clock,
    )
    assert Measurement.model_validate_json(m.model_dump_json()) == m


class QueueingServer:
    """A server whose first tokens wait longer the faster requests arrive: 10 req/s at most
    (every request at once), p99 TTFT 900 ms there and in proportion to the rate below it."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.rates: list[float | None] = []

    def prepare(self, requests, knobs):  # type: ignore[no-untyped-def]
        return len(requests), knobs.get(REQUEST_RATE)

    def run(self, prepared, deadline):  # type: ignore[no-untyped-def]
        n, rate = prepared
        self.rates.append(rate)
        at = 10.0 if rate in (None, math.inf) else rate  # at once: the maximum
        self.clock.advance(n / at)
        ttft = 0.9 * at / 10.0
        timings = tuple(RequestTiming(ttft, ttft + 0.1, 2) for _ in range(n))
        return RunOutput(
            requests=n,
            input_tokens=n,
            output_tokens=2 * n,
            ttft_s=tuple(t.ttft_s for t in timings),
            e2e_s=tuple(t.e2e_s for t in timings),
            timings=timings,
        )

    def close(self) -> None:
        pass

    def gpu_indices(self) -> list[int]:
        return []

    def effective_knobs(self) -> dict:  # type: ignore[type-arg]
        return {}


def test_a_rate_search_steps_down_from_the_maximum_to_the_first_rate_within_the_limit() -> None:
    clock = FakeClock()
    engine = QueueingServer(clock)
    limits = goal(constraints=["ttft_p99_ms<=500"])
    requests = [Request((1, 2, 3), 2, "p")] * 10
    m = measure_max_rate(
        engine, requests, {}, MeasurementProtocol(), lambda m: not limits.breaches(m), clock=clock
    )
    # At once: 10 req/s, 900 ms. Then 10, 9, 8, 7, 6 req/s break 500 ms; 5 req/s keeps it.
    assert m.max_request_rate == pytest.approx(10.0)
    assert m.request_rate == pytest.approx(5.0)
    assert m.latency is not None and m.latency.ttft is not None
    assert m.latency.ttft.p99_ms == pytest.approx(450.0)
    assert m.requests_per_s.median == pytest.approx(5.0)
    # One warm-up in all, then three timed runs per rate tried: first every request at once.
    assert engine.rates[:4] == [math.inf] * 4
    assert engine.rates[4:] == pytest.approx(
        [10.0] * 3 + [9.0] * 3 + [8.0] * 3 + [7.0] * 3 + [6.0] * 3 + [5.0] * 3
    )


def test_a_rate_search_scores_a_configuration_that_keeps_the_limit_at_once_there() -> None:
    clock = FakeClock()
    limits = goal(constraints=["ttft_p99_ms<=1000"])
    m = measure_max_rate(
        QueueingServer(clock),
        [Request((1,), 2, "p")] * 10,
        {},
        MeasurementProtocol(),
        lambda m: not limits.breaches(m),
        clock=clock,
    )
    assert m.request_rate is None and m.max_request_rate == pytest.approx(10.0)


class TraceServer(QueueingServer):
    """The queueing server, sent the load client's own arrival gaps: its first tokens wait in
    proportion to the rate the gaps make (10 req/s at most)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        from tuner.engines.openai_client import VLLM, LoadClient

        self.client = LoadClient("http://127.0.0.1:1", "m", VLLM)
        self.gaps: list[list[float]] = []

    def prepare(self, requests, knobs):  # type: ignore[no-untyped-def]
        rate = knobs.get(REQUEST_RATE)
        gaps = self.client.prepare(requests, request_rate=rate).gaps
        return len(requests), None if rate == math.inf else rate, gaps

    def run(self, prepared, deadline):  # type: ignore[no-untyped-def]
        n, rate, gaps = prepared
        self.gaps.append(gaps)
        return super().run((n, rate), deadline)


def test_a_rate_search_on_a_trace_scales_its_arrivals() -> None:
    clock = FakeClock()
    engine = TraceServer(clock)
    limits = goal(constraints=["ttft_p99_ms<=500"])
    # A burst of 3 in 0.2 s, then a lull: a mean of 0.75 req/s over 4 s.
    trace = [Request((1, 2), 2, "p", t) for t in (0.0, 0.1, 0.2, 4.0)]
    m = measure_max_rate(
        engine, trace, {}, MeasurementProtocol(), lambda m: not limits.breaches(m), clock=clock
    )
    assert m.max_request_rate == pytest.approx(10.0) and m.request_rate == pytest.approx(5.0)
    # The warm-up and the first three runs: every request at once.
    assert engine.gaps[:4] == [[0.0] * 4] * 4
    # Then the trace's own gaps, scaled to a mean of 10, 9, ... 5 requests/s: its burst stays.
    at_five = engine.gaps[-1]
    assert at_five == pytest.approx([g * 0.75 / 5.0 for g in (0.0, 0.1, 0.1, 3.8)])
