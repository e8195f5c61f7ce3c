"""A study's setup: engine, model and workload resolved and checked before any trial runs.

Bad input (an unknown engine, knob or workload, a model that is not here, a pinned value outside
its range) fails in `prepare` with one line, before anything slow happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from tuner.engines import engine_class
from tuner.errors import TunerError
from tuner.execution.fleet import WorkerMachine
from tuner.hardware.machine import Hardware, detect_hardware, detect_platform, slugify
from tuner.measure.measurement import MeasurementProtocol
from tuner.measure.objective import Goal
from tuner.measure.trial import TrialTask
from tuner.models import DEFAULT_MODEL, ModelRef, model_facts, read_config, resolve_model
from tuner.replay.replay import Replay, catalogue_of, open_replay
from tuner.specs.knobs import Catalogue, Value
from tuner.specs.space import SearchSpace, resolve
from tuner.specs.workloads import (
    Request,
    Tokenizer,
    WorkloadSpec,
    build_requests,
    load_workload,
    request_count,
)

__all__ = ["DEFAULT_MODEL", "Setup", "Size", "catalogue_of", "prepare", "space_of"]

#: The embedded default job, where no model is given: `DEFAULT_MODEL` (a tiny synthetic model)
#: answering the first 64 prompts with 16 tokens each: minutes on a 2-core CPU, where the whole
#: workload takes many times as long. A real study names its model and keeps the whole workload.
DEFAULT_REQUESTS = 64
DEFAULT_OUTPUT_TOKENS = 16


class Size(NamedTuple):
    """A named workload's size, where it is not the workload's own: requests, output tokens per
    request, and the time scale of its arrivals."""

    requests: int | None = None
    output_tokens: int | None = None
    time_scale: float | None = None


@dataclass
class Setup:
    """An engine, model and workload resolved and checked, ready for trials."""

    engine: str
    catalogue: Catalogue
    space: SearchSpace
    model: ModelRef
    workload: WorkloadSpec
    requests: list[Request]
    hardware: Hardware
    options: dict[str, Any] = field(default_factory=dict)
    fresh_process: bool = False
    replay: Replay | None = None
    #: The size of the embedded default job where it runs (no model was given), else None.
    default_job: Size | None = None

    @property
    def default_job_line(self) -> str | None:
        """The line that says the embedded default job runs, where it does."""
        if self.default_job is None:
            return None
        return (
            f"no --model: the embedded default job ({DEFAULT_MODEL}, "
            f"{self.default_job.requests} requests, {self.default_job.output_tokens} tokens out "
            "each)"
        )

    def check_live(self) -> None:
        """One line when no engine runs here: a replay answers studies, not `tuner bench`."""
        if self.replay is not None:
            raise TunerError("a replay answers studies only (tuner tune); bench runs an engine")

    def check_goal(self, goal: Goal) -> None:
        """One line when the goal names figures this engine or machine cannot give: latency
        where runs are not streamed, power, energy or memory without GPU telemetry."""
        used = [*goal.objectives, *(c.metric for c in goal.constraints)]
        if "latency" in goal.needs and not self.reports_latency:
            names = ", ".join(m.name for m in used if m.needs == "latency")
            raise TunerError(
                f"{names} needs the latency of each request, which {self.engine} does not "
                "report (batch generation returns every token at once); vllm (vLLM's own "
                "per-request metrics) and the server engines (vllm-server, openai-server) do. "
                "Power, energy and memory limits apply to every engine on a GPU."
            )
        if "telemetry" in goal.needs and not self.has_telemetry:
            names = ", ".join(m.name for m in used if m.needs == "telemetry")
            raise TunerError(
                f"{names} needs GPU telemetry, and there is none here "
                f"({self.hardware.no_gpu_reason or 'no GPU'})"
            )

    @property
    def reports_latency(self) -> bool:
        if self.replay is not None:
            return self.replay.recorded("latency")
        return bool(engine_class(self.engine).reports_latency)

    @property
    def has_telemetry(self) -> bool:
        if self.replay is not None:
            return self.replay.recorded("telemetry")
        return bool(self.hardware.gpus)

    def task(self, knobs: dict[str, Value], protocol: MeasurementProtocol) -> TrialTask:
        """The self-contained unit of work that measures `knobs`."""
        load, run = self.space.split(knobs)
        return TrialTask(
            self.engine,
            str(self.model.path),
            load,
            run,
            tuple(self.requests),
            protocol,
            dict(self.options),
            self.fresh_process,
            engine_class(self.engine).gpus_needed(load),
        )


def workload_facts(facts: dict[str, float], requests: Sequence[Request]) -> dict[str, float]:
    """Model facts with the workload's, which catalogue bounds and rules may name."""
    return {
        **facts,
        "workload_max_tokens": max(len(r.prompt_token_ids) + r.output_tokens for r in requests),
        "workload_requests": len(requests),
    }


def prepare(
    engine: str,
    model: str,
    workload: WorkloadSpec | str,
    pinned: dict[str, Value] | None = None,
    *,
    set_pairs: Sequence[str] = (),
    options: dict[str, Any] | None = None,
    machine: WorkerMachine | None = None,
    size: Size | None = None,
) -> Setup:
    """Resolves and checks everything a trial needs; bad input fails here, before any trial.

    `set_pairs` are `name=value` strings parsed against the catalogue and added to `pinned`.
    `machine` is where the trials run when that is not here (a fleet's workers): its platform
    decides which knobs exist and its GPU model names the profile. A workload named by a string
    is loaded at `size`. An empty `model` is the embedded default job for an engine (the setup's
    `default_job`), the table's model for a replay.
    """
    replay = open_replay(engine)
    if replay is not None:
        loaded = _replayed(replay, model, options)
    else:
        loaded = _loaded(engine, model, workload, options, size)
    catalogue, facts = loaded.catalogue, loaded.facts
    platform = machine.platform if machine else detect_platform(catalogue.modules())
    space = resolve(catalogue, platform, facts=facts)
    pinned = {**(pinned or {}), **space.parse_overrides(set_pairs)}
    if pinned:
        space.complete(pinned)  # ranges, conditions and forbidden combinations
        space = resolve(catalogue, platform, pinned, facts)
    return Setup(
        engine,
        catalogue,
        space,
        loaded.model,
        loaded.workload,
        loaded.requests,
        machine.hardware if machine else detect_hardware(),
        dict(options or {}),
        loaded.fresh_process,
        replay,
        loaded.default_job,
    )


@dataclass(frozen=True)
class _Loaded:
    """What an engine's model and workload (or a replay's table) give a setup."""

    catalogue: Catalogue
    model: ModelRef
    workload: WorkloadSpec
    requests: list[Request]
    facts: dict[str, float]
    fresh_process: bool = False
    default_job: Size | None = None


def _replayed(replay: Replay, model: str, options: dict[str, Any] | None) -> _Loaded:
    """A replay's: the table's model and workload; nothing is loaded or tokenized."""
    table = replay.table
    if model and model != table.model:
        raise TunerError("a replay takes its model and workload from the table")
    if options:
        raise TunerError(f"a replay takes no engine options ({', '.join(options)})")
    ref = ModelRef(table.model, replay.path, slugify(table.model), "replay")
    return _Loaded(replay.catalogue(), ref, table.workload, [], {})


def _loaded(
    engine: str,
    model: str,
    workload: WorkloadSpec | str,
    options: dict[str, Any] | None,
    size: Size | None,
) -> _Loaded:
    """An engine's: its options and model checked, the workload tokenized with the model's
    tokenizer (the embedded default job where no model is given)."""
    cls = engine_class(engine)
    cls.check_options(options or {})
    default_job = None
    if not model:
        model, size = DEFAULT_MODEL, _default_size(size or Size())
        default_job = size
    size = size or Size()
    spec = load_workload(workload, **size._asdict()) if isinstance(workload, str) else workload
    model_ref = resolve_model(model)
    cls.check_model(read_config(model_ref.path))
    facts = model_facts(model_ref.path)
    max_len = facts.get("model_max_len")
    requests = build_requests(spec, Tokenizer(model_ref.path), int(max_len) if max_len else None)
    facts = workload_facts(facts, requests)
    return _Loaded(
        cls.catalogue(), model_ref, spec, requests, facts, cls.fresh_process_per_load, default_job
    )


def space_of(engine: str, model: str | None, workload: str) -> SearchSpace:
    """An engine's knobs as they stand on this machine: for a model (bounds that depend on it
    filled in), or else bounded by the workload alone (its request count bounds batch sizes)."""
    if model is not None:
        return prepare(engine, model, workload).space
    catalogue = catalogue_of(engine)
    facts = {"workload_requests": request_count(load_workload(workload))}
    return resolve(catalogue, detect_platform(catalogue.modules()), facts=facts)


def _default_size(size: Size) -> Size:
    """The embedded default job's size (the parts of `size` given are kept)."""
    return size._replace(
        requests=size.requests or DEFAULT_REQUESTS,
        output_tokens=size.output_tokens or DEFAULT_OUTPUT_TOKENS,
    )
