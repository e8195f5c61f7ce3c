"""How a configuration is measured: a warm-up of the full shape, then timed repeats.

The first run of a configuration pays for kernel selection, allocator growth and compilation (on
the H100 test machine it read 2x to 15x slower than later runs), so it is reported apart as the
cold run and never scored. Every run is bounded by a time limit: a slow configuration is stopped
and scored from the work it completed. Repeats that spread more than `max_cv`, or that ran on a
throttled GPU, are followed by another set of repeats, up to `max_remeasures` sets; the figures
are over all timed runs and carry their spread. Each run carries its GPU telemetry.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from tuner.engines.base import (
    KEPT_FAILURES,
    REQUEST_RATE,
    Engine,
    EngineFailed,
    EngineTimeout,
    RequestTiming,
)
from tuner.hardware.telemetry import DEFAULT_PERIOD_S, Sampler, Telemetry
from tuner.specs.knobs import Value
from tuner.specs.workloads import Request

Clock = Callable[[], float]


class MeasurementProtocol(BaseModel):
    """How each trial is measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    repeats: int = Field(default=3, ge=3, description="timed runs after the warm-up")
    run_time_limit_s: float = Field(default=60.0, gt=0, description="bound on each timed run")
    warmup_time_limit_s: float = Field(default=180.0, gt=0, description="bound on the warm-up")
    max_cv: float = Field(default=0.10, ge=0, description="spread above which to re-measure")
    max_remeasures: int = Field(default=2, ge=0, description="extra sets of repeats at most")
    sample_period_s: float = Field(default=DEFAULT_PERIOD_S, gt=0, description="GPU sampling")
    rate_search: list[str] | None = Field(
        default=None,
        description="server engines: find the highest request rate that keeps these limits "
        "(metric<=value), stepping down from the measured maximum; None: one load",
    )
    rate_step: float = Field(
        default=0.1, gt=0, lt=1, description="rate search: step, as a share of the maximum"
    )


class Percentiles(BaseModel):
    """A latency's distribution over the requests of one run, in milliseconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float


def percentiles(samples_s: Sequence[float]) -> Percentiles | None:
    """Mean and 50th, 90th and 99th percentiles (linear interpolation) of samples in seconds."""
    if not samples_s:
        return None
    ordered = sorted(s * 1000 for s in samples_s)

    def at(q: float) -> float:
        pos = q * (len(ordered) - 1)
        low = int(pos)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)

    return Percentiles(
        mean_ms=statistics.fmean(ordered), p50_ms=at(0.5), p90_ms=at(0.9), p99_ms=at(0.99)
    )


class Latency(BaseModel):
    """Per-request latencies of a run, where the engine streams (server mode)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ttft: Percentiles | None = Field(description="time to first token")
    itl: Percentiles | None = Field(description="time between streamed tokens")
    e2e: Percentiles | None = Field(description="request start to last token")

    def scaled(self, factor: float) -> Latency:
        """Every figure multiplied by `factor` (a replay's noise draw)."""
        return self.times(factor, factor, factor)

    def times(self, ttft: float, itl: float, e2e: float) -> Latency:
        """Each latency multiplied by its own factor (a prediction's corrections)."""

        def by(p: Percentiles | None, factor: float) -> Percentiles | None:
            if p is None:
                return None
            return Percentiles(**{k: v * factor for k, v in p.model_dump().items()})

        return Latency(ttft=by(self.ttft, ttft), itl=by(self.itl, itl), e2e=by(self.e2e, e2e))


class PerRequest(BaseModel):
    """Each streamed request's latencies in one run, in milliseconds, in finishing order:
    what goodput counts against an SLO after the fact."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    ttft_ms: list[float]
    tpot_ms: list[float] = Field(description="time per output token after the first")
    e2e_ms: list[float]
    output_tokens: list[int]
    alike: int = Field(
        default=1,
        ge=1,
        description="requests each entry stands for (an imported table whose source gives one "
        "latency per run)",
    )

    def scaled(self, factor: float) -> PerRequest:
        """Every latency multiplied by `factor` (a replay's noise draw)."""
        return PerRequest(
            ttft_ms=[v * factor for v in self.ttft_ms],
            tpot_ms=[v * factor for v in self.tpot_ms],
            e2e_ms=[v * factor for v in self.e2e_ms],
            output_tokens=self.output_tokens,
            alike=self.alike,
        )


def per_request(timings: Sequence[RequestTiming]) -> PerRequest | None:
    """The latencies of streamed requests, rounded to microseconds; None without any."""
    if not timings:
        return None
    return PerRequest(
        ttft_ms=[round(t.ttft_s * 1000, 3) for t in timings],
        tpot_ms=[round(t.tpot_s * 1000, 3) for t in timings],
        e2e_ms=[round(t.e2e_s * 1000, 3) for t in timings],
        output_tokens=[t.output_tokens for t in timings],
    )


class Run(BaseModel):
    """One pass over the workload."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    elapsed_s: float
    requests: int
    input_tokens: int
    output_tokens: int
    truncated: bool = Field(description="stopped at the time limit before every request was done")
    failed_requests: int = Field(default=0, description="requests refused or broken off")
    failures: list[str] = Field(default=[], description="their first distinct messages")
    cut_requests: int = Field(
        default=0, description="requests still unfinished at the time limit (not completed)"
    )
    telemetry: Telemetry | None = None
    latency: Latency | None = None
    per_request: PerRequest | None = None
    gpus: int = Field(default=1, ge=1, description="GPUs the configuration used (1 on a CPU)")
    engine_metrics: dict[str, float] | None = Field(
        default=None,
        description="the server's own figures of the run, from its /metrics "
        "(prefix_cache_hit_rate, preemptions, queue_time_mean_ms)",
    )

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def total_tokens_per_s(self) -> float:
        tokens = self.input_tokens + self.output_tokens
        return tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def output_tokens_per_s_per_gpu(self) -> float:
        """Output tok/s over the GPUs used: what choosing a parallel layout on a fixed number
        of GPUs compares."""
        return self.output_tokens_per_s / self.gpus


def alike_run(
    ttft_ms: float,
    tpot_ms: float,
    *,
    requests: int,
    isl: int,
    osl: int,
    concurrency: int,
    gpus: int,
) -> Run:
    """A run in which every request is alike: `requests` of `isl` prompt and `osl` output
    tokens, `concurrency` in flight, each taking `ttft_ms` to its first token and `tpot_ms` per
    token after it (end to end: TTFT + (OSL - 1) x TPOT). The run takes (requests /
    concurrency) end-to-end times: steady waves of `concurrency`. What a source or a model that
    gives TTFT and TPOT per configuration (NVIDIA's silicon rows, AIConfigurator) amounts to."""
    e2e = ttft_ms + (osl - 1) * tpot_ms
    each = [round(ttft_ms, 3), round(tpot_ms, 3), round(e2e, 3)]  # to the microsecond

    def same(ms: float) -> Percentiles:
        return Percentiles(mean_ms=ms, p50_ms=ms, p90_ms=ms, p99_ms=ms)

    return Run(
        elapsed_s=requests / concurrency * e2e / 1000,
        requests=requests,
        input_tokens=requests * isl,
        output_tokens=requests * osl,
        truncated=False,
        gpus=gpus,
        latency=Latency(ttft=same(ttft_ms), itl=same(tpot_ms), e2e=same(e2e)),
        per_request=PerRequest(
            ttft_ms=[each[0]],
            tpot_ms=[each[1]],
            e2e_ms=[each[2]],
            output_tokens=[osl],
            alike=requests,
        ),
    )


class Stats(BaseModel):
    """Spread of one figure over the timed repeats."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    median: float
    mean: float
    stdev: float
    min: float
    max: float
    cv: float = Field(description="coefficient of variation: stdev / mean")


def stats(values: Sequence[float]) -> Stats:
    """Median, mean, sample standard deviation, range and coefficient of variation."""
    if not values:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    stdev = statistics.stdev(values) if len(values) > 1 else 0.0
    return Stats(
        median=statistics.median(values),
        mean=mean,
        stdev=stdev,
        min=min(values),
        max=max(values),
        cv=stdev / mean if mean > 0 else 0.0,
    )


class Energy(BaseModel):
    """Energy figures over the timed runs (from their GPU telemetry)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    joules_per_output_token: Stats
    output_tokens_per_s_per_w: Stats
    avg_power_w: Stats
    peak_power_w: float | None
    peak_memory_mib: float | None
    energy_source: str = Field(description="counter, integrated_power, or mixed")


def median_latency(runs: Sequence[Run]) -> Latency | None:
    """Each latency figure's median over the runs that have it."""
    latencies = [r.latency for r in runs if r.latency is not None]
    if not latencies:
        return None

    def median_of(kind: str) -> Percentiles | None:
        found = [getattr(lat, kind) for lat in latencies if getattr(lat, kind) is not None]
        if not found:
            return None
        fields = Percentiles.model_fields
        return Percentiles(**{f: statistics.median(getattr(p, f) for p in found) for f in fields})

    return Latency(ttft=median_of("ttft"), itl=median_of("itl"), e2e=median_of("e2e"))


def energy_of(runs: Sequence[Run]) -> tuple[Energy | None, str | None]:
    """Energy figures of runs, or None and the reason."""
    windows: list[Telemetry] = []
    for run in runs:
        if run.telemetry is None:
            return None, "no GPU telemetry"
        if run.telemetry.energy_j is None or run.telemetry.energy_j <= 0:
            notes = [g.note for g in run.telemetry.gpus if g.note]
            return None, notes[0] if notes else "energy could not be read"
        if run.output_tokens == 0:
            return None, "a run produced no tokens"
        windows.append(run.telemetry)
    energies = [w.energy_j or 0.0 for w in windows]
    tokens = [r.output_tokens for r in runs]
    sources = {g.energy_source for w in windows for g in w.gpus}
    peaks = [w.peak_power_w for w in windows if w.peak_power_w is not None]
    memory = [w.peak_memory_mib for w in windows if w.peak_memory_mib is not None]
    energy = Energy(
        joules_per_output_token=stats([e / n for e, n in zip(energies, tokens, strict=True)]),
        output_tokens_per_s_per_w=stats([n / e for e, n in zip(energies, tokens, strict=True)]),
        avg_power_w=stats([w.avg_power_w or 0.0 for w in windows]),
        peak_power_w=max(peaks) if peaks else None,
        peak_memory_mib=max(memory) if memory else None,
        energy_source=str(sources.pop()) if len(sources) == 1 else "mixed",
    )
    return energy, None


class Measurement(BaseModel):
    """A configuration's measurement: cold run apart, statistics over the timed runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cold: Run
    runs: list[Run]
    output_tokens_per_s: Stats
    total_tokens_per_s: Stats
    requests_per_s: Stats
    truncated: bool = Field(description="some timed run hit its time limit")
    failed_requests: int = Field(
        default=0, description="requests refused or broken off, over the timed runs"
    )
    failures: list[str] = Field(default=[], description="their first distinct messages")
    latency: Latency | None = Field(
        default=None, description="the median over runs of each latency figure (server mode)"
    )
    energy: Energy | None = None
    energy_note: str | None = Field(default=None, description="why there are no energy figures")
    throttled: bool = Field(default=False, description="a GPU throttled during a timed run")
    remeasured: int = Field(default=0, description="extra sets of repeats run")
    request_rate: float | None = Field(
        default=None,
        description="requests/s (Poisson) it was measured at, when a rate search chose one",
    )
    max_request_rate: float | None = Field(
        default=None, description="rate search: requests/s with every request sent at once"
    )
    stable: bool = Field(default=True, description="final spread within max_cv, no throttling")

    @property
    def engine_metrics(self) -> dict[str, float] | None:
        """Each of the server's own figures (`Run.engine_metrics`), the median over the timed
        runs that have it; None where no run has any."""
        names = sorted({n for r in self.runs for n in (r.engine_metrics or {})})
        found = {
            n: statistics.median(
                r.engine_metrics[n] for r in self.runs if r.engine_metrics and n in r.engine_metrics
            )
            for n in names
        }
        return found or None

    def on_gpus(self, gpus: int) -> Measurement:
        """The measurement with each run marked as using `gpus` GPUs."""
        if gpus == 1:
            return self

        def marked(run: Run) -> Run:
            return run.model_copy(update={"gpus": gpus})

        return self.model_copy(
            update={"cold": marked(self.cold), "runs": [marked(r) for r in self.runs]}
        )

    @classmethod
    def from_runs(
        cls, cold: Run, runs: Sequence[Run], *, remeasured: int = 0, max_cv: float | None = None
    ) -> Measurement:
        rates = stats([r.output_tokens_per_s for r in runs])
        throttled = any(r.telemetry is not None and r.telemetry.throttled for r in runs)
        energy, note = energy_of(runs)
        return cls(
            cold=cold,
            runs=list(runs),
            output_tokens_per_s=rates,
            total_tokens_per_s=stats([r.total_tokens_per_s for r in runs]),
            requests_per_s=stats([r.requests_per_s for r in runs]),
            truncated=any(r.truncated for r in runs),
            failed_requests=sum(r.failed_requests for r in runs),
            failures=list(dict.fromkeys(f for r in runs for f in r.failures))[:KEPT_FAILURES],
            latency=median_latency(runs),
            energy=energy,
            energy_note=note,
            throttled=throttled,
            remeasured=remeasured,
            stable=(max_cv is None or rates.cv <= max_cv) and not throttled,
        )


def timed_run(
    engine: Engine,
    prepared: object,
    total_requests: int,
    limit_s: float,
    clock: Clock,
    sampler: Sampler | None = None,
) -> Run:
    """One run of the prepared workload, bounded by `limit_s`, with the GPUs sampled around it.
    The deadline handed to the engine is on `time.perf_counter`'s scale, whatever `clock` is."""
    if sampler is not None:
        sampler.start()
    deadline = time.perf_counter() + limit_s
    start = clock()
    try:
        out = engine.run(prepared, deadline)
        elapsed = clock() - start
    finally:
        telemetry = sampler.stop() if sampler is not None else None
    return Run(
        elapsed_s=elapsed,
        requests=out.requests,
        input_tokens=out.input_tokens,
        output_tokens=out.output_tokens,
        truncated=out.requests + out.failed < total_requests,
        failed_requests=out.failed,
        failures=list(out.failures),
        cut_requests=out.cut,
        telemetry=telemetry,
        latency=Latency(
            ttft=percentiles(out.ttft_s), itl=percentiles(out.itl_s), e2e=percentiles(out.e2e_s)
        )
        if out.e2e_s
        else None,
        per_request=per_request(out.timings),
        engine_metrics=out.engine_metrics,
    )


def completed(run: Run, which: str, limit_s: float) -> Run:
    """`run`, if it completed a request: a run that completed none is not a measurement (every
    request refused: the engine failed; none done by the time limit: it hung or is too slow)."""
    if run.requests > 0:
        return run
    if run.failed_requests:
        raise EngineFailed(
            f"every request failed ({run.failed_requests}): {'; '.join(run.failures)}"
        )
    cut = f" ({run.cut_requests} cut unfinished)" if run.cut_requests else ""
    raise EngineTimeout(f"{which} completed no request within its {limit_s:g} s limit{cut}")


def needs_remeasure(runs: Sequence[Run], max_cv: float) -> bool:
    """Whether a set of repeats spread too much or ran on a throttled GPU."""
    throttled = any(r.telemetry is not None and r.telemetry.throttled for r in runs)
    return throttled or stats([r.output_tokens_per_s for r in runs]).cv > max_cv


def measure(
    engine: Engine,
    requests: Sequence[Request],
    knobs: Mapping[str, Value],
    protocol: MeasurementProtocol,
    *,
    clock: Clock = time.perf_counter,
    progress: Callable[[str], None] = lambda _: None,
    sampler: Sampler | None = None,
    cold: Run | None = None,
) -> Measurement:
    """Prepares once, warms up with the full workload, then times `protocol.repeats` runs, and
    more sets of repeats while they spread past `protocol.max_cv` (up to the limit). Given a
    `cold` run (the engine is warm already), the warm-up is skipped and that run reported."""
    prepared = engine.prepare(requests, knobs)
    if cold is None:
        progress("warm-up")
        cold = completed(
            timed_run(
                engine, prepared, len(requests), protocol.warmup_time_limit_s, clock, sampler
            ),
            "the warm-up",
            protocol.warmup_time_limit_s,
        )

    def repeat_set(label: str) -> list[Run]:
        runs: list[Run] = []
        for i in range(protocol.repeats):
            progress(f"{label}{i + 1}/{protocol.repeats}")
            run = timed_run(
                engine, prepared, len(requests), protocol.run_time_limit_s, clock, sampler
            )
            runs.append(completed(run, f"timed run {len(runs) + 1}", protocol.run_time_limit_s))
        return runs

    runs = repeat_set("run ")
    remeasured = 0
    while remeasured < protocol.max_remeasures and needs_remeasure(runs, protocol.max_cv):
        remeasured += 1
        runs += repeat_set(f"re-measure {remeasured}: run ")
    return Measurement.from_runs(cold, runs, remeasured=remeasured, max_cv=protocol.max_cv)


def measure_max_rate(
    engine: Engine,
    requests: Sequence[Request],
    knobs: Mapping[str, Value],
    protocol: MeasurementProtocol,
    keeps: Callable[[Measurement], bool],
    *,
    clock: Clock = time.perf_counter,
    progress: Callable[[str], None] = lambda _: None,
    sampler: Sampler | None = None,
) -> Measurement:
    """The measurement at the highest request rate that `keeps` the limits, as vLLM's auto-tune
    finds it: the workload sent at once gives the maximum rate; then Poisson arrivals (a trace's
    own, scaled) at 100%, 90%, 80%, ... of it (steps of `protocol.rate_step`) until a rate
    keeps them. A configuration that keeps them with every request at once is scored there;
    one that keeps them at no rate returns its last measurement, which breaks them."""
    at_once = {**knobs, REQUEST_RATE: math.inf}
    first = measure(
        engine, requests, at_once, protocol, clock=clock, progress=progress, sampler=sampler
    )
    top = first.requests_per_s.median
    first = first.model_copy(update={"max_request_rate": top})
    if keeps(first) or top <= 0:
        return first
    last = first
    steps = round(1 / protocol.rate_step)
    for i in range(steps):
        rate = top * (1 - i * protocol.rate_step)
        if rate <= 0:
            break
        at = f"{rate:.2f} req/s: "

        def said(text: str, at: str = at) -> None:
            progress(at + text)

        last = measure(
            engine,
            requests,
            {**knobs, REQUEST_RATE: rate},
            protocol,
            clock=clock,
            progress=said,
            sampler=sampler,
            cold=first.cold,
        ).model_copy(update={"request_rate": rate, "max_request_rate": top})
        if keeps(last):
            break
    return last
