"""Fake engines: a known throughput surface with a peak and an out-of-memory region."""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from tuner.engines.base import EngineBase, EngineOutOfMemory, RequestTiming, RunOutput
from tuner.specs.knobs import Catalogue, Value
from tuner.specs.workloads import Request

if TYPE_CHECKING:
    from tuner.measure.trial import TrialResult

FAKE_CATALOGUE = {
    "engine": "fake",
    "summary": "a known throughput surface with an out-of-memory region",
    "knobs": {
        "batch_size": {
            "type": "int",
            "stage": "run",
            "range": [1, 256],
            "log": True,
            "load": True,
            "default": 1,
            "help": "requests per step",
        },
        "kernel": {
            "type": "choice",
            "stage": "load",
            "choices": ["basic", "fused", "tiled"],
            "default": "basic",
            "help": "kernel family",
        },
        "cache": {
            "type": "choice",
            "stage": "run",
            "choices": ["dynamic", "static"],
            "default": "dynamic",
            "help": "cache layout",
        },
        "compile": {
            "type": "bool",
            "stage": "load",
            "when": {"cache": "static"},
            "default": False,
            "help": "compiled decode step",
        },
    },
}

PEAK_BATCH = 48
KERNEL_FACTOR = {"basic": 1.0, "fused": 1.3, "tiled": 1.15}
#: Tokens per second at the surface's top scale; chosen so fake runs last milliseconds.
SCALE_TOKENS_PER_S = 40_000.0


def surface(knobs: Mapping[str, Value]) -> float | None:
    """Output tok/s of the fake engine for `knobs`, or None where it runs out of memory.

    A smooth peak in log2(batch_size) at 48, times factors for the kernel, a static cache and
    compilation. Memory runs out when batch_size x (2 for a static cache) exceeds 128.
    """
    batch = int(knobs["batch_size"])
    static = knobs.get("cache") == "static"
    if batch * (2 if static else 1) > 128:
        return None
    shape = math.exp(-((math.log2(batch) - math.log2(PEAK_BATCH)) ** 2) / (2 * 1.5**2))
    factor = KERNEL_FACTOR[str(knobs["kernel"])]
    if static:
        factor *= 1.1 * (1.2 if knobs.get("compile") else 1.0)
    return SCALE_TOKENS_PER_S * (0.05 + 0.95 * shape) * factor


def peak() -> tuple[dict[str, Value], float]:
    """The best configuration of the fake surface and its tok/s (by exhaustive search)."""
    best: tuple[dict[str, Value], float] = ({}, 0.0)
    for batch in range(1, 257):
        for kernel in KERNEL_FACTOR:
            for cache, compile_ in (("dynamic", None), ("static", False), ("static", True)):
                knobs: dict[str, Value] = {"batch_size": batch, "kernel": kernel, "cache": cache}
                if compile_ is not None:
                    knobs["compile"] = compile_
                value = surface(knobs)
                if value is not None and value > best[1]:
                    best = (knobs, value)
    return best


def spin(seconds: float) -> None:
    """Busy-waits until this thread has spent `seconds` of CPU time: precise to microseconds,
    unlike sleep, and as long whatever else runs on the machine."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


class FakeEngine(EngineBase):
    """An engine whose throughput is `surface(knobs)`, spent as CPU time (`spin`) and timed by
    it, so that its measurements are the surface's on a loaded machine too."""

    name: ClassVar[str] = "fake"
    load_s: ClassVar[float] = 0.005

    @staticmethod
    def run_clock() -> float:
        return time.thread_time()

    @classmethod
    def catalogue(cls) -> Catalogue:
        return Catalogue.model_validate(FAKE_CATALOGUE)

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {"fake": "1.0"}

    def __init__(
        self, model_dir: Path, knobs: Mapping[str, Value], options: Mapping[str, Any] | None = None
    ) -> None:
        self.load_knobs = dict(knobs)
        spin(self.load_s)

    def prepare(self, requests: Sequence[Request], knobs: Mapping[str, Value]) -> Any:
        merged = {**self.load_knobs, **knobs}
        batch = int(knobs["batch_size"])
        chunks = [requests[i : i + batch] for i in range(0, len(requests), batch)]
        return merged, chunks

    def misbehave(self, knobs: Mapping[str, Value]) -> None:
        """Hook for the crashing and hanging fakes."""

    def run(self, prepared: Any, deadline: float) -> RunOutput:
        knobs, chunks = prepared
        self.misbehave(knobs)
        rate = surface(knobs)
        if rate is None:
            raise EngineOutOfMemory(f"fake engine: batch_size={knobs['batch_size']} does not fit")
        done = inputs = outputs = 0
        timings: list[RequestTiming] = []
        itl: list[float] = []
        start = self.run_clock()
        for chunk in chunks:
            if time.perf_counter() >= deadline:
                break
            began = self.run_clock()
            tokens = sum(r.output_tokens for r in chunk)
            spin(tokens / rate)
            took = self.run_clock() - began
            done += len(chunk)
            inputs += sum(len(r.prompt_token_ids) for r in chunk)
            outputs += tokens
            # Every request of a chunk advances one token per step: its time per token grows
            # with the batch, and later chunks wait for earlier ones (time to first token).
            steps = max(r.output_tokens for r in chunk)
            for r in chunk:
                step = took / steps
                timings.append(
                    RequestTiming(began - start + step, began - start + took, r.output_tokens)
                )
                itl += [step] * (r.output_tokens - 1)
        if not self.reports_latency:
            return RunOutput(requests=done, input_tokens=inputs, output_tokens=outputs)
        return RunOutput(
            requests=done,
            input_tokens=inputs,
            output_tokens=outputs,
            ttft_s=tuple(t.ttft_s for t in timings),
            itl_s=tuple(itl),
            e2e_s=tuple(t.e2e_s for t in timings),
            timings=tuple(timings),
        )

    def close(self) -> None:
        pass


class FakeServer(FakeEngine):
    """The fake engine, reporting each request's latency as a server does: a request's time
    per token is its batch's step (it grows with the batch, while throughput peaks at 48), and
    its time to first token includes the wait for the batches before it."""

    name: ClassVar[str] = "fake-server"
    reports_latency: ClassVar[bool] = True


class CrashingEngine(FakeEngine):
    """The fake engine, except that a batch_size of 64 or more kills its process (SIGKILL)."""

    def misbehave(self, knobs: Mapping[str, Value]) -> None:
        if int(knobs["batch_size"]) >= 64:
            os.kill(os.getpid(), signal.SIGKILL)


class HangingEngine(FakeEngine):
    """The fake engine, except that a batch_size of 64 or more never returns."""

    def misbehave(self, knobs: Mapping[str, Value]) -> None:
        if int(knobs["batch_size"]) >= 64:
            while True:
                time.sleep(1)


class FakeClock:
    """A clock that advances only when told to."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ScriptedEngine(EngineBase):
    """Each run takes the next duration from a script on a `FakeClock` and completes
    `tokens_per_request` tokens for each request."""

    def __init__(self, clock: FakeClock, durations_s: Sequence[float], tokens_per_request: int):
        self.clock = clock
        self.durations: Iterator[float] = iter(durations_s)
        self.tokens = tokens_per_request

    def prepare(self, requests: Sequence[Request], knobs: Mapping[str, Value]) -> Any:
        return list(requests)

    def run(self, prepared: Any, deadline: float) -> RunOutput:
        self.clock.advance(next(self.durations))
        inputs = sum(len(r.prompt_token_ids) for r in prepared)
        return RunOutput(len(prepared), inputs, self.tokens * len(prepared))

    def close(self) -> None:
        pass


def surface_result(number: int, origin: str, knobs: dict[str, Value]) -> TrialResult:
    """A trial result read off `surface` with no time spent: for benchmarking the search itself
    (`Study.run(evaluate=surface_result)`)."""
    from datetime import UTC, datetime

    from tuner.measure.measurement import Measurement, Run
    from tuner.measure.trial import TrialResult

    rate = surface(knobs)
    started = datetime.now(UTC)
    if rate is None:
        return TrialResult(
            number=number, origin=origin, knobs=knobs, wall_s=0.0, started_at=started,
            status="oom", reason="fake engine: does not fit",
        )  # fmt: skip
    run = Run(
        elapsed_s=1000 / rate, requests=1, input_tokens=0, output_tokens=1000, truncated=False
    )
    return TrialResult(
        number=number, origin=origin, knobs=knobs, wall_s=0.0, started_at=started,
        status="ok", measurement=Measurement.from_runs(run, [run] * 3),
    )  # fmt: skip
