"""The engine adapter protocol: what the measurement layer needs from an inference engine.

An adapter class is constructed with a model folder and its load-time knobs (that is the load),
prepares a workload under run-time knobs outside the timed region, runs it until done or until a
deadline, and closes. It imports its engine inside its methods, so that importing `tuner` never
imports torch or vLLM. `EngineClass` declares every capability a study may use, optional ones
included; `EngineBase` gives their defaults, and every adapter derives from it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from tuner.specs.knobs import Catalogue, Value, gpus_of
from tuner.specs.workloads import Request


class EngineOutOfMemory(Exception):
    """The engine ran out of device (or host) memory; adapters raise it for their engine's OOM."""


class EngineTimeout(Exception):
    """The engine did not become ready in time (a server that never answers, say)."""


#: A run-time setting the measurement layer adds to a server engine's knobs during a rate search
#: (`tuner.measure.measurement.measure_max_rate`): requests/s, Poisson arrivals. Not a catalogue
#: knob.
REQUEST_RATE = "request_rate"

#: How many distinct failure messages a run, and a measurement, keep.
KEPT_FAILURES = 3


@dataclass(frozen=True)
class RequestTiming:
    """One streamed request's latencies (what goodput counts against an SLO)."""

    ttft_s: float
    e2e_s: float
    output_tokens: int

    @property
    def tpot_s(self) -> float:
        """Time per output token after the first (0 for a one-token answer)."""
        return (
            (self.e2e_s - self.ttft_s) / (self.output_tokens - 1) if self.output_tokens > 1 else 0.0
        )


@dataclass(frozen=True)
class RunOutput:
    """What one run produced, counted from what the engine returned."""

    requests: int
    input_tokens: int
    output_tokens: int
    ttft_s: tuple[float, ...] = ()
    itl_s: tuple[float, ...] = ()
    e2e_s: tuple[float, ...] = ()
    timings: tuple[RequestTiming, ...] = ()  # per request, where the engine streams
    failed: int = 0  # requests the engine refused or broke off; not counted above
    failures: tuple[str, ...] = ()  # their first distinct messages (the server's answers)
    cut: int = 0  # requests started and still unfinished at the deadline; not counted above
    engine_metrics: dict[str, float] | None = None  # the server's own (`tuner.engines.metrics`)


class EngineFailed(Exception):
    """The engine refused a configuration or failed, in its own words (the message is shown
    as it is, without this class's name)."""


_OOM_MARKERS = ("out of memory", "can't allocate memory", "cannot allocate memory")


class Engine(Protocol):
    """A loaded engine (one instance per model load)."""

    def prepare(self, requests: Sequence[Request], knobs: Mapping[str, Value]) -> Any:
        """Everything that is not generation (batching, padding, copies to the device)."""
        ...

    def run(self, prepared: Any, deadline: float) -> RunOutput:
        """Generates for the prepared requests; stops starting work at `deadline`
        (a `time.perf_counter()` value) and bounds work in flight where the engine allows."""
        ...

    def close(self) -> None:
        """Releases the model."""
        ...

    def gpu_indices(self) -> list[int]:
        """The GPUs (CUDA ordinals) that hold the model, whose telemetry is sampled during
        runs; none for an engine on the CPU."""
        ...

    def effective_knobs(self) -> dict[str, Value]:
        """The knob values the engine ran with, those it chose itself for knobs left unset
        included (the trial's `engine_config`); empty where the engine does not say."""
        ...


class EngineClass(Protocol):
    """An adapter class: its name, knob catalogue, versions, declared capabilities, and the
    constructor (which is the load).

    The constructor takes the model folder, the load-time knobs and `options`: the study's
    engine options (a server command, a request rate, ...) plus `log_file`, the worker's log.
    """

    name: ClassVar[str]
    #: A new worker process before each load, for engines that do not free memory in-process.
    fresh_process_per_load: ClassVar[bool]
    #: The engine options it takes (`--server-cmd`, `--request-rate`, ...), with their help.
    options: ClassVar[Mapping[str, str]]
    #: Whether its runs report per-request latency (TTFT, ITL, end-to-end): engines that stream.
    reports_latency: ClassVar[bool]

    def __call__(
        self, model_dir: Path, knobs: Mapping[str, Value], options: Mapping[str, Any]
    ) -> Engine: ...

    def catalogue(self) -> Catalogue: ...

    def versions(self) -> dict[str, str]: ...

    def gpus_needed(self, load_knobs: Mapping[str, Value]) -> int: ...

    def check_options(self, options: Mapping[str, Any]) -> None:
        """One `TunerError` line for an option it does not take or a malformed value."""
        ...

    def is_oom(self, exc: BaseException) -> bool:
        """Whether an exception from this engine means memory ran out: the one place an
        adapter classifies out-of-memory."""
        ...

    def run_clock(self) -> float:
        """The clock that times its runs (`time.perf_counter` but for simulated engines)."""
        ...

    def check_model(self, config: Mapping[str, Any]) -> None:
        """One `TunerError` line for a model (its `config.json`, read and checked) this engine
        cannot load without running the model folder's own code."""
        ...


class EngineBase:
    """The defaults of the optional capabilities: no engine options, any model folder,
    same-process reloads, no latency per request, runs timed by the wall clock, no GPU, nothing
    reported of its own choices, out-of-memory told by `EngineOutOfMemory`, `MemoryError`, an
    `OutOfMemoryError` or the usual messages (in the exception or a cause)."""

    name: ClassVar[str]
    fresh_process_per_load: ClassVar[bool] = False
    options: ClassVar[Mapping[str, str]] = {}
    reports_latency: ClassVar[bool] = False

    @staticmethod
    def run_clock() -> float:
        """What times its runs: the wall clock. Only a simulated engine differs:
        `tuner.testing`'s fakes spend CPU time in place of work and time their runs by it, which
        the load of other processes on the machine does not stretch."""
        return time.perf_counter()

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        from tuner.errors import TunerError

        unknown = [k for k in options if k not in cls.options]
        if unknown and not cls.options:
            raise TunerError(f"{cls.name} takes no engine options ({', '.join(options)})")
        if unknown:
            raise TunerError(
                f"{cls.name} has no option {unknown[0]!r}; its options: {', '.join(cls.options)}"
            )

    @classmethod
    def check_model(cls, config: Mapping[str, Any]) -> None:
        pass

    @classmethod
    def is_oom(cls, exc: BaseException) -> bool:
        seen: BaseException | None = exc
        while seen is not None:
            if isinstance(seen, EngineOutOfMemory | MemoryError):
                return True
            if type(seen).__name__ == "OutOfMemoryError":
                return True
            if any(marker in str(seen).lower() for marker in _OOM_MARKERS):
                return True
            seen = seen.__cause__
        return False

    @classmethod
    def gpus_needed(cls, load_knobs: Mapping[str, Value]) -> int:
        """GPUs a configuration uses: tensor x pipeline parallel size, or `num_gpus`."""
        return gpus_of(load_knobs)

    def gpu_indices(self) -> list[int]:
        return []

    def effective_knobs(self) -> dict[str, Value]:
        return {}
