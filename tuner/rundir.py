"""The run directory: a study's saved spec, its machine, and its finished trials.

One folder per study. `study.json` holds the `StudySpec`, `machine.json` the machine it ran on, and
`trials.jsonl` one `TrialResult` per line, appended and synced as each trial finishes, so that an
interrupted study resumes without repeating finished trials. Reading a run directory imports no
optimizer and no engine.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuner.errors import TunerError
from tuner.fleet import FleetSpec
from tuner.knobs import Value, describe
from tuner.measure import Protocol as MeasureProtocol
from tuner.objective import Goal, goal, one_objective_to_many
from tuner.optimizers import OptimizerName
from tuner.trial import TrialResult
from tuner.workloads import WorkloadSpec

STUDY_FILE = "study.json"
TRIALS_FILE = "trials.jsonl"
MACHINE_FILE = "machine.json"


class StudySpec(BaseModel):
    """What a study measures and how long it may search; saved as the run's `study.json`."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    engine: str
    model: str
    workload: WorkloadSpec
    trials: int | None = Field(default=None, ge=1, description="trial budget, baseline included")
    confirm: int = Field(
        default=2,
        ge=0,
        description="best configurations measured again on fresh repeats after the search",
    )
    time_budget_s: float | None = Field(default=None, gt=0, description="wall-clock budget")
    seed: int = 0
    optimizer: OptimizerName = "gp"
    objectives: list[str] = Field(
        default=["output_tokens_per_s"],
        description="what the study optimizes; several make a Pareto front",
    )
    constraints: list[str] = Field(
        default=[], description="limits a configuration must keep, as metric<=value"
    )
    protocol: MeasureProtocol = MeasureProtocol()
    pinned: dict[str, Value] = {}
    engine_options: dict[str, Any] = Field(
        default={}, description="options of the engine adapter (server command, request rate)"
    )
    load_timeout_s: float = Field(default=900.0, gt=0)
    trial_timeout_s: float | None = Field(default=None, gt=0)
    fleet: FleetSpec | None = Field(
        default=None, description="the Dask fleet the trials run on (None: this machine)"
    )
    gpu_model: str | None = Field(
        default=None, description="on a fleet, the GPU model whose workers run the trials"
    )
    warm_start: list[dict[str, Value]] = Field(
        default=[], description="configurations put first in the initial design"
    )
    warm_start_from: str | None = Field(
        default=None, description="the profile (of another GPU model) they came from"
    )
    replay_time_scale: float = Field(
        default=0.0, ge=0, description="a replay sleeps its recorded GPU time times this"
    )

    @model_validator(mode="before")
    @classmethod
    def _one_objective(cls, data: Any) -> Any:
        return one_objective_to_many(data)

    @model_validator(mode="after")
    def _known_goal(self) -> StudySpec:
        try:
            self.goal()
        except TunerError as exc:
            raise ValueError(str(exc)) from None
        return self

    def goal(self) -> Goal:
        """The objectives and constraints, parsed."""
        return goal(self.objectives, self.constraints)

    def timeout_s(self) -> float:
        """A trial's hard timeout: given, or enough for a load and every bounded run."""
        if self.trial_timeout_s is not None:
            return self.trial_timeout_s
        p = self.protocol
        runs = p.repeats * (1 + p.max_remeasures)
        return self.load_timeout_s + p.warmup_time_limit_s + runs * p.run_time_limit_s + 60


def run_dir_for(root: Path, engine: str, model_slug: str, workload_slug: str) -> Path:
    """A new run directory name: time, engine, model and workload."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{stamp}-{engine}-{model_slug}-{workload_slug}"


def check_writable(folder: Path, what: str) -> None:
    """Fails with one line unless files can be created in `folder` (created if missing)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".tuner-write-check-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise TunerError(f"cannot write to the {what} {folder}: {exc.strerror or exc}") from None


def check_new(run_dir: Path) -> None:
    """Fails with one line when `run_dir` already holds a study."""
    if (run_dir / STUDY_FILE).exists():
        raise TunerError(f"{run_dir} already holds a study; resume it with --resume {run_dir}")


def create(run_dir: Path, spec: StudySpec, machine_json: str) -> None:
    """Writes a new study's `study.json` and `machine.json`."""
    check_new(run_dir)
    check_writable(run_dir, "run directory")
    write_spec(run_dir, spec)
    (run_dir / MACHINE_FILE).write_text(machine_json + "\n")


def write_spec(run_dir: Path, spec: StudySpec) -> None:
    """Saves (or replaces, on resume with new budgets) the study's spec."""
    (run_dir / STUDY_FILE).write_text(spec.model_dump_json(indent=2) + "\n")


def read_spec(run_dir: Path) -> StudySpec:
    """The study a run directory holds; one line when it holds none."""
    path = run_dir / STUDY_FILE
    if not path.is_file():
        raise TunerError(f"{run_dir} holds no study ({STUDY_FILE} is missing)")
    try:
        return StudySpec.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise TunerError(f"{path}: {describe(exc)}") from None


def read_trials(path: Path) -> list[TrialResult]:
    """Finished trials of a run directory; a torn last line (a crash mid-write) is dropped."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    results = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            results.append(TrialResult.model_validate_json(line))
        except ValidationError as exc:
            if number == len(lines):
                break
            raise TunerError(
                f"{path} line {number}: not a trial result ({describe(exc)})"
            ) from None
    return results


def append_trial(path: Path, result: TrialResult) -> None:
    """Appends one finished trial and syncs it to disk before anything else hears of it."""
    with open(path, "a") as f:
        f.write(result.model_dump_json() + "\n")
        f.flush()
        os.fsync(f.fileno())
