"""How a configuration is measured: a warm-up of the full shape, then timed repeats.

The first run of a configuration pays for kernel selection, allocator growth and compilation (on
the H100 test machine it read 2x to 15x slower than later runs), so it is reported apart as the
cold run and never scored. Every run is bounded by a time limit: a slow configuration is stopped
and scored from the work it completed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from tuner.engines.base import Engine
from tuner.knobs import Value
from tuner.workloads import Request

Clock = Callable[[], float]


class Protocol(BaseModel):
    """How each trial is measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    repeats: int = Field(default=3, ge=3, description="timed runs after the warm-up")
    run_time_limit_s: float = Field(default=60.0, gt=0, description="bound on each timed run")
    warmup_time_limit_s: float = Field(default=180.0, gt=0, description="bound on the warm-up")


class Run(BaseModel):
    """One pass over the workload."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    elapsed_s: float
    requests: int
    input_tokens: int
    output_tokens: int
    truncated: bool = Field(description="stopped at the time limit before every request was done")

    @property
    def output_tokens_per_s(self) -> float:
        return self.output_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def total_tokens_per_s(self) -> float:
        tokens = self.input_tokens + self.output_tokens
        return tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0


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


class Measurement(BaseModel):
    """A configuration's measurement: cold run apart, statistics over the warm repeats."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cold: Run
    runs: list[Run]
    output_tokens_per_s: Stats
    total_tokens_per_s: Stats
    truncated: bool = Field(description="some timed run hit its time limit")

    @classmethod
    def from_runs(cls, cold: Run, runs: Sequence[Run]) -> Measurement:
        return cls(
            cold=cold,
            runs=list(runs),
            output_tokens_per_s=stats([r.output_tokens_per_s for r in runs]),
            total_tokens_per_s=stats([r.total_tokens_per_s for r in runs]),
            truncated=any(r.truncated for r in runs),
        )


def timed_run(
    engine: Engine, prepared: object, total_requests: int, limit_s: float, clock: Clock
) -> Run:
    """One run of the prepared workload, bounded by `limit_s`. The deadline handed to the engine
    is on `time.perf_counter`'s scale, whatever `clock` measures with."""
    deadline = time.perf_counter() + limit_s
    start = clock()
    out = engine.run(prepared, deadline)
    elapsed = clock() - start
    return Run(
        elapsed_s=elapsed,
        requests=out.requests,
        input_tokens=out.input_tokens,
        output_tokens=out.output_tokens,
        truncated=out.requests < total_requests,
    )


def measure(
    engine: Engine,
    requests: Sequence[Request],
    knobs: Mapping[str, Value],
    protocol: Protocol,
    *,
    clock: Clock = time.perf_counter,
    progress: Callable[[str], None] = lambda _: None,
) -> Measurement:
    """Prepares once, warms up with the full workload, then times `protocol.repeats` runs."""
    prepared = engine.prepare(requests, knobs)
    progress("warm-up")
    cold = timed_run(engine, prepared, len(requests), protocol.warmup_time_limit_s, clock)
    runs = []
    for i in range(protocol.repeats):
        progress(f"run {i + 1}/{protocol.repeats}")
        runs.append(timed_run(engine, prepared, len(requests), protocol.run_time_limit_s, clock))
    return Measurement.from_runs(cold, runs)
