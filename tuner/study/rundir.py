"""The run directory: a study's saved spec, its machine, and its finished trials.

One folder per study. `study.json` holds the `StudySpec`, `machine.json` the machine it ran on, and
`trials.jsonl` one `TrialResult` per line, appended and synced as each trial finishes, so that an
interrupted study resumes without repeating finished trials. Reading a run directory imports no
optimizer and no engine.

One study at a time: a study holds the lock of its run directory (`flock` on `.lock`) from its
start to its end, and a second one there is told so in one line. On NFS, Linux emulates `flock`
with the server's byte-range locks, which hold across hosts where the mount has locking (not
with `nolock`, where they are local to each host). A trial that cannot be appended whole (a
full disk) leaves the file as it was, and a torn last line left by a crash or an older tuner is
set aside (`trials.jsonl.torn`) before the next trial is appended.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuner.errors import TunerError
from tuner.execution.fleet import FleetSpec
from tuner.files import check_writable, os_error, read_text, write_atomic
from tuner.measure.measurement import MeasurementProtocol
from tuner.measure.objective import Goal, goal, one_objective_to_many
from tuner.measure.trial import PriorPlan, TrialResult
from tuner.optimizers import OptimizerName
from tuner.specs.knobs import Value, describe
from tuner.specs.workloads import WorkloadSpec

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
    optimizer: OptimizerName = "ladder"
    objectives: list[str] = Field(
        default=["output_tokens_per_s"],
        description="what the study optimizes; several make a Pareto front",
    )
    constraints: list[str] = Field(
        default=[], description="limits a configuration must keep, as metric<=value"
    )
    protocol: MeasurementProtocol = MeasurementProtocol()
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
    prior: PriorPlan | None = Field(
        default=None, description="the prior's ranking the study starts from (--prior)"
    )
    calibrate: bool = Field(
        default=True,
        description="the prior's predictions are corrected by each measured trial, and each of "
        "its starts is the best corrected configuration not yet measured",
    )
    pibo: bool = Field(
        default=False,
        description="the prior also weights the optimizer's acquisition function (piBO; gp, rf)",
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


LOCK_FILE = ".lock"
TORN_FILE = TRIALS_FILE + ".torn"


class RunLock:
    """The lock of a run directory, held until `release` (or this process ends)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK_FILE
        self._fd: int | None = None
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise TunerError(
                f"cannot write to the run directory {run_dir}: {os_error(exc)}"
            ) from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(self._fd, 300, 0).decode(errors="replace").strip()
            self.release()
            raise TunerError(
                f"{run_dir} is in use by another study ({holder or 'a tuner process'}): wait "
                "for it to end, or give another --run-dir"
            ) from None
        stamp = datetime.now().isoformat(timespec="seconds")
        with contextlib.suppress(OSError):  # who holds it is a courtesy, not the lock
            os.ftruncate(self._fd, 0)
            os.pwrite(
                self._fd,
                f"tuner pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(),
                0,
            )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __del__(self) -> None:
        self.release()


def check_new(run_dir: Path) -> None:
    """Fails with one line when `run_dir` already holds a study."""
    if (run_dir / STUDY_FILE).exists():
        raise TunerError(f"{run_dir} already holds a study; resume it with --resume {run_dir}")


def create(run_dir: Path, spec: StudySpec, machine_json: str) -> RunLock:
    """Writes a new study's `study.json` and `machine.json`, under the run directory's lock,
    which it returns (held)."""
    lock = RunLock(run_dir)
    try:
        check_new(run_dir)
        check_writable(run_dir, "run directory")
        write_spec(run_dir, spec)
        try:
            write_atomic(run_dir / MACHINE_FILE, machine_json + "\n")
        except OSError as exc:
            raise TunerError(f"cannot write {run_dir / MACHINE_FILE}: {os_error(exc)}") from None
    except BaseException:
        lock.release()
        raise
    return lock


def write_spec(run_dir: Path, spec: StudySpec) -> None:
    """Saves (or replaces, on resume with new budgets) the study's spec, whole or not at all."""
    try:
        write_atomic(run_dir / STUDY_FILE, spec.model_dump_json(indent=2) + "\n")
    except OSError as exc:
        raise TunerError(f"cannot write {run_dir / STUDY_FILE}: {os_error(exc)}") from None


def read_spec(run_dir: Path) -> StudySpec:
    """The study a run directory holds; one line when it holds none."""
    path = run_dir / STUDY_FILE
    if not path.is_file():
        raise TunerError(f"{run_dir} holds no study ({STUDY_FILE} is missing)")
    try:
        return StudySpec.model_validate_json(read_text(path, "study file"))
    except ValidationError as exc:
        raise TunerError(f"{path}: {describe(exc)}") from None


def read_trials(path: Path) -> list[TrialResult]:
    """Finished trials of a run directory; a torn last line (a crash mid-write) is left out."""
    if not path.is_file():
        return []
    try:
        lines = path.read_bytes().split(b"\n")
    except OSError as exc:
        raise TunerError(f"cannot read {path}: {os_error(exc)}") from None
    tail = lines.pop()  # after the last newline: nothing, or a line cut short
    results = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            results.append(TrialResult.model_validate_json(line.decode("utf-8")))
        except (ValidationError, UnicodeDecodeError) as exc:
            if number == len(lines) and not tail.strip():
                break  # the last line, whole but not a trial: set aside before the next append
            problem = describe(exc) if isinstance(exc, ValidationError) else "not UTF-8 text"
            raise TunerError(f"{path} line {number}: not a trial result ({problem})") from None
    whole = _trial(tail)
    return [*results, whole] if whole is not None else results


def repair_trials(path: Path) -> str | None:
    """Makes the next append start a line of its own: a last line with no newline is ended
    when it is a whole trial, else it is set aside (its bytes moved to `trials.jsonl.torn`), as
    is a last line that is not a trial result. Says what it did; None when nothing was to do."""
    data = path.read_bytes() if path.is_file() else b""
    if not data:
        return None
    ended = data.endswith(b"\n")
    start = data.rfind(b"\n", 0, len(data) - 1 if ended else len(data)) + 1
    last = data[start:-1] if ended else data[start:]
    if _trial(last) is not None or not last.strip():
        if ended:
            return None
        with open(path, "ab") as f:
            f.write(b"\n")
            os.fsync(f.fileno())
        return f"ended the last line of {path} (a whole trial without its newline)"
    with open(path.with_name(TORN_FILE), "ab") as aside:
        aside.write(last + b"\n")
    with open(path, "r+b") as f:
        f.truncate(start)
        os.fsync(f.fileno())
    return f"set aside a torn last line of {path} ({len(last)} bytes, kept in {TORN_FILE})"


def _trial(line: bytes) -> TrialResult | None:
    """The trial a line holds, or None."""
    if not line.strip():
        return None
    try:
        return TrialResult.model_validate_json(line.decode("utf-8"))
    except (ValidationError, UnicodeDecodeError):
        return None


def append_trial(path: Path, result: TrialResult) -> None:
    """Appends one finished trial and syncs it to disk before anything else hears of it. A
    write that fails (a full disk) is undone: the file ends after the trial before."""
    line = (result.model_dump_json() + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            written = 0
            while written < len(line):
                written += os.write(fd, line[written:])
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
