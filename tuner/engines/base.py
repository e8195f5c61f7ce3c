"""The engine adapter protocol: what the measurement layer needs from an inference engine.

An adapter class is constructed with a model folder and its load-time knobs (that is the load),
prepares a workload under run-time knobs outside the timed region, runs it until done or until a
deadline, and closes. It imports its engine inside its methods, so that importing `tuner` never
imports torch or vLLM.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from tuner.knobs import Catalogue, Value
from tuner.workloads import Request


class EngineOutOfMemory(Exception):
    """The engine ran out of device (or host) memory; adapters raise it for their engine's OOM."""


class EngineTimeout(Exception):
    """The engine did not become ready in time (a server that never answers, say)."""


@dataclass(frozen=True)
class RunOutput:
    """What one run produced, counted from what the engine returned."""

    requests: int
    input_tokens: int
    output_tokens: int
    ttft_s: tuple[float, ...] = ()
    itl_s: tuple[float, ...] = ()
    e2e_s: tuple[float, ...] = ()
    failed: int = 0  # requests the engine refused or broke off; not counted above
    failures: tuple[str, ...] = ()  # their first distinct messages (the server's answers)


class EngineFailed(Exception):
    """The engine refused a configuration or failed, in its own words (the message is shown
    as it is, without this class's name)."""


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


class ReportsConfig(Protocol):
    """Optional: an engine that reports the knob values it ran with, including those it chose
    itself when a knob was left unset (recorded as the trial's `engine_config`)."""

    def effective_knobs(self) -> dict[str, Value]: ...


class UsesGpus(Protocol):
    """Optional: an engine that says which GPUs (CUDA ordinals) hold its model, so that their
    telemetry is sampled during runs. Engines without it are taken to use no GPU."""

    def gpu_indices(self) -> list[int]: ...


class EngineClass(Protocol):
    """The adapter class: its name, knob catalogue, versions, and constructor (the load).

    `options` are the study's engine options (a server command, a client concurrency, ...) plus
    `log_file`, the worker's log. `fresh_process_per_load` asks for a new worker process before
    each load (for engines that do not free their memory in-process).
    """

    name: ClassVar[str]
    fresh_process_per_load: ClassVar[bool]

    def __call__(
        self, model_dir: Path, knobs: Mapping[str, Value], options: Mapping[str, Any]
    ) -> Engine: ...

    def catalogue(self) -> Catalogue: ...

    def versions(self) -> dict[str, str]: ...
