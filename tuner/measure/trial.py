"""A trial: one configuration measured in a worker process, and its result.

`TrialTask` is a self-contained, picklable unit of work (engine, model folder, knobs, requests,
protocol), so that trials can later run on other GPUs or nodes. `TrialResult` keeps every figure of
the trial, not only the one being optimized.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tuner.measure.measurement import Measurement, MeasurementProtocol
from tuner.specs.knobs import Value, gpus_of
from tuner.specs.workloads import Request

Status = Literal["ok", "oom", "crashed", "timeout"]
STATUSES: tuple[Status, ...] = ("ok", "oom", "crashed", "timeout")


@dataclass(frozen=True)
class TrialTask:
    """Everything a worker needs to load an engine and measure one configuration."""

    engine: str
    model_dir: str
    load_knobs: dict[str, Value]
    run_knobs: dict[str, Value]
    requests: tuple[Request, ...]
    protocol: MeasurementProtocol
    engine_options: dict[str, Any] = field(default_factory=dict)
    fresh_process: bool = False
    #: GPUs the configuration uses (tensor x pipeline parallel, `num_gpus`); on a CPU, 1 (a slot).
    gpus: int = 1

    @property
    def load_key(self) -> tuple[Any, ...]:
        """What identifies a model load: trials with the same key can share one."""
        return (
            self.engine,
            self.model_dir,
            tuple(sorted(self.load_knobs.items())),
            tuple(sorted(self.engine_options.items())),
        )


class Outcome(BaseModel):
    """What a worker reports for one task."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    status: Status
    reason: str | None = None
    measurement: Measurement | None = None
    load_s: float | None = Field(default=None, description="model load; None when reused")
    reused_model: bool = False
    versions: dict[str, str] = {}
    log: str | None = Field(default=None, description="the worker's log file")
    engine_config: dict[str, Value] = Field(
        default={}, description="knob values the engine reports it ran with"
    )


class Placement(BaseModel):
    """Where a trial ran on a fleet: its Dask worker, host and GPUs."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    worker: str
    address: str
    host: str
    gpus: list[str] = Field(default=[], description="CUDA_VISIBLE_DEVICES of its trial process")
    gpu_model: str

    @property
    def text(self) -> str:
        """`on worker 1 (host, GPU 0, NVIDIA H100 ...)`, for progress lines."""
        gpus = f"GPU {','.join(self.gpus)} {self.gpu_model}" if self.gpus else self.gpu_model
        return f"on worker {self.worker} ({self.host}, {gpus})"


class Prediction(BaseModel):
    """What a performance model (a prior, `tuner.predict.prior`) said of a configuration before it
    was measured: its predicted figures, or that it would not fit in memory."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    by: str = Field(description="the model that predicted, its version and its data")
    status: Literal["ok", "oom"]
    reason: str | None = None
    measurement: Measurement | None = Field(
        default=None, description="the predicted figures, as a measurement would hold them"
    )
    speed_of_light_tokens_per_s: float | None = Field(
        default=None, description="output tok/s at the hardware's speed of light, where known"
    )

    @property
    def output_tokens_per_s(self) -> float | None:
        return self.measurement.output_tokens_per_s.median if self.measurement else None


class Predicted(BaseModel):
    """One configuration a prior ranked, and its prediction."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    knobs: dict[str, Value]
    prediction: Prediction


class PriorPlan(BaseModel):
    """What a study takes from its prior (`--prior`): the configurations it starts from and
    every prediction, kept beside the trials of the same configurations."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    by: str
    covers: list[str] = Field(description="the knobs the prior reads")
    starts: list[dict[str, Value]] = Field(description="run first, before the baseline")
    predicted: list[Predicted] = Field(description="best first")

    def prediction(self, knobs: dict[str, Value]) -> Prediction | None:
        """The prediction of the ranked configuration that agrees with `knobs` on every knob
        the prior reads."""
        want = {n: knobs.get(n) for n in self.covers}
        for p in self.predicted:
            if {n: p.knobs.get(n) for n in self.covers} == want:
                return p.prediction
        return None


class TrialResult(BaseModel):
    """One line of a run directory's `trials.jsonl`."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    schema_version: Literal[1] = 1
    number: int
    origin: str
    knobs: dict[str, Value]
    status: Status
    reason: str | None = None
    measurement: Measurement | None = None
    load_s: float | None = None
    reused_model: bool = False
    wall_s: float
    started_at: datetime
    log: str | None = None
    versions: dict[str, str] = {}
    engine_config: dict[str, Value] = Field(
        default={}, description="knob values the engine reports it ran with (its own defaults too)"
    )
    placement: Placement | None = Field(
        default=None, description="where it ran, for trials run on a Dask fleet"
    )
    prediction: Prediction | None = Field(
        default=None, description="what the study's prior predicted for it (`--prior`)"
    )

    @property
    def gpus(self) -> int:
        """GPUs the configuration used: as measured, else tensor x pipeline x data parallel
        size or `num_gpus` (1 on a CPU)."""
        if self.measurement is not None:
            return self.measurement.cold.gpus
        return gpus_of(self.knobs)

    @property
    def gpu_s(self) -> float:
        """GPU-seconds the trial took: its seconds times its GPUs."""
        return self.wall_s * self.gpus

    @property
    def output_tokens_per_s(self) -> float | None:
        """Median output tok/s of the timed runs, None for a failed trial."""
        return self.measurement.output_tokens_per_s.median if self.measurement else None

    @property
    def of_speed_of_light(self) -> float | None:
        """Measured output tok/s as a share of the prior's speed-of-light bound for the
        configuration; None without both."""
        return of_speed_of_light(self.measurement, self.prediction)


def of_speed_of_light(
    measurement: Measurement | None, prediction: Prediction | None
) -> float | None:
    """A measurement's output tok/s as a share of a prediction's speed-of-light bound."""
    bound = prediction.speed_of_light_tokens_per_s if prediction is not None else None
    if not bound or measurement is None:
        return None
    return measurement.output_tokens_per_s.median / bound
