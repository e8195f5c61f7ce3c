"""`tuner tune` and `tuner bench` as Python, what the commands call.

`tune(TuneRequest(...))` sets up the studies (one, or one per GPU model of a fleet), runs them
side by side, and writes each one's report and profile; `resume` continues a study from its run
directory. Its steps are functions of their own for a caller that shows progress (the command
line): `new_studies`, `run_studies`, `finish`. `bench(BenchRequest(...))` measures one
configuration. The README shows both in a runnable example.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property, partial
from pathlib import Path
from typing import Any

from tuner.errors import TunerError
from tuner.execution.executor import NullObserver, Observer
from tuner.execution.executor import bench as bench_one
from tuner.execution.fleet import Fleet, FleetSpec, Group, open_fleet
from tuner.measure.measurement import MeasurementProtocol
from tuner.measure.trial import TrialResult
from tuner.optimizers import GUIDED, check_available
from tuner.profiles.profile import Profile, profile_path, write_profile
from tuner.replay.replay import VersusTable
from tuner.report.report import write_report
from tuner.specs.knobs import Value
from tuner.specs.workloads import WorkloadSpec
from tuner.study.prepare import Setup, Size, catalogue_of, prepare
from tuner.study.prior import load_prior, prior_plan
from tuner.study.profile import build_profile
from tuner.study.rundir import StudySpec, read_spec, run_dir_for
from tuner.study.study import Study, StudyOutcome, warm_start, warm_start_from

Say = Callable[[str], None]
#: A JSON object as `json.dumps` takes it (its values JSON values).
JsonObject = dict[str, object]


def say_nothing(line: str) -> None:
    """A `Say` that says nothing: the default where a caller shows no lines."""


@dataclass(frozen=True)
class Job:
    """What runs and how each trial is measured, as `tune` and `bench` share it. `workload` is
    a workload's name (`synthetic`, `humaneval`, `jsonl:PATH`, ...), sized by `requests`,
    `output_tokens` and `time_scale`, or a `WorkloadSpec`. No `model` is the embedded default
    job; a replay (`engine="replay:TABLE"`) takes its model and workload from the table."""

    engine: str
    model: str = ""
    workload: str | WorkloadSpec = "synthetic"
    requests: int | None = None
    output_tokens: int | None = None
    time_scale: float | None = None
    set_pairs: Sequence[str] = ()
    engine_options: Mapping[str, Any] = field(default_factory=dict)
    protocol: MeasurementProtocol = field(default_factory=MeasurementProtocol)
    trial_timeout_s: float | None = None

    @property
    def size(self) -> Size:
        """The size a named workload is loaded at."""
        return Size(self.requests, self.output_tokens, self.time_scale)


@dataclass(frozen=True)
class TuneRequest(Job):
    """One `tuner tune`, its options by their Python names: the job (`Job`), then the search."""

    objectives: Sequence[str] = ("output_tokens_per_s",)
    constraints: Sequence[str] = ()
    rate_search: bool = False
    optimizer: str = "ladder"
    trials: int | None = None
    time_budget_s: float | None = None
    seed: int = 0
    confirm: int = 2
    prior: str | None = None
    pibo: bool = False
    calibrate: bool = True
    warm_start: Path | None = None
    replay_time_scale: float = 0.0
    run_dir: Path | None = None
    profiles_dir: Path = Path("profiles")
    per_gpu_model: bool = False

    def check(self, fleet: Fleet | None) -> None:
        """Options that do not go together: one line."""
        if self.rate_search and not self.constraints:
            raise TunerError("--rate-search looks for the highest rate within a limit: give --slo")
        if self.rate_search and self.engine_options.get("request_rate") is not None:
            raise TunerError("--rate-search chooses the request rate: leave out --request-rate")
        if self.per_gpu_model and fleet is None:
            raise TunerError("--per-gpu-model splits a fleet: give --workers or --dask-scheduler")
        if self.per_gpu_model and self.warm_start is not None:
            raise TunerError(
                "--warm-start is for one study; --per-gpu-model warm-starts each itself"
            )
        if self.pibo and self.prior is None:
            raise TunerError("--pibo weights the search by a prior: give --prior too")
        if self.pibo and self.optimizer not in GUIDED:
            raise TunerError(
                f"--pibo weights the acquisition of {' or '.join(GUIDED)}, not of "
                f"{self.optimizer}: add --optimizer gp"
            )


@dataclass(frozen=True)
class Finished:
    """A finished study: its outcome, profile (and where it was written) and report."""

    study: Study
    outcome: StudyOutcome
    profile: Profile
    path: Path
    report: Path | None

    @cached_property
    def versus_table(self) -> VersusTable | None:
        """A replayed study's pick beside its table's optimum; None for a measured study."""
        replay, best = self.study.setup.replay, self.outcome.best
        if replay is None or best is None:
            return None
        return replay.judge(self.study.goal, best)

    def lines(self) -> list[str]:
        """The closing lines: what the study wrote, after a replay's pick against its table."""
        versus = self.versus_table
        if versus is not None:
            return [
                versus.line(len(self.outcome.results), self.outcome.gpu_s),
                f"profile written: {self.path} (the table's machine and recorded figures)",
            ]
        report = [f"report written: {self.report}"] if self.report is not None else []
        return [f"profile written: {self.path}", *report]

    def as_json(self) -> JsonObject:
        """What `tuner tune --json` prints for this study."""
        study, outcome, versus = self.study, self.outcome, self.versus_table
        if versus is not None:
            name = versus.goal.name
            return {
                "run_dir": str(study.run_dir),
                "profile": str(self.path),
                "objective": name,
                "best": {"knobs": versus.best.knobs, name: versus.picked},
                "table_optimum": {"knobs": versus.optimum.knobs, name: versus.top},
                "ratio_to_optimum": versus.ratio,
                "recorded_gpu_s": outcome.gpu_s,
                "trials": len(outcome.results),
            }
        goal, profile = study.goal, self.profile
        return {
            "profile": str(self.path),
            "report": str(self.report) if self.report else None,
            "run_dir": str(study.run_dir),
            "stopped": outcome.stopped,
            "gpu_s": outcome.gpu_s,
            "wall_s": outcome.wall_s,
            "best": profile.best.model_dump(mode="json"),
            "objectives": profile.objectives,
            "constraints": profile.constraints,
            "front": [p.model_dump(mode="json") for p in profile.front],
            "speedup": profile.speedup,
            "trials": [
                {
                    "number": r.number,
                    "origin": r.origin,
                    "status": r.status,
                    "output_tokens_per_s": r.output_tokens_per_s,
                    "objectives": [o.of(r.measurement) for o in goal.objectives],
                    "infeasible": goal.feasible(r, robust=True),
                    "knobs": r.knobs,
                    "reason": r.reason,
                }
                for r in outcome.results
            ],
        }


def modules_of(engine: str) -> list[str]:
    """The Python modules an engine's platform facts depend on."""
    return sorted(catalogue_of(engine).modules())


@contextlib.contextmanager
def maybe_fleet(spec: FleetSpec | None, say: Say = say_nothing) -> Iterator[Fleet | None]:
    """The open fleet `spec` names, or None; `say` hears when tuner starts its workers here."""
    if spec is None:
        yield None
        return
    if not (spec.scheduler or spec.cluster != "local"):
        say(f"starting {spec.describe()}")
    with open_fleet(spec) as fleet:
        yield fleet


def new_studies(
    request: TuneRequest,
    fleet: Fleet | None = None,
    say: Say = say_nothing,
    notice: Say | None = None,
) -> list[Study]:
    """The new studies of one request: one, or one per GPU model of the fleet (each in a run
    directory of its own, warm-started from another model's profile where it has none). `say`
    hears what the prior could not do, `notice` (`say` unless given) that the default job runs."""
    request.check(fleet)
    groups: list[Group | None] = [None]
    if fleet is not None:
        modules = modules_of(request.engine)
        groups = (
            list(fleet.groups(modules)) if request.per_gpu_model else [fleet.group(None, modules)]
        )
    studies = []
    for number, group in enumerate(groups):
        # Parse the held knobs against the catalogue before anything slow happens.
        setup = prepare(
            request.engine,
            request.model,
            request.workload,
            set_pairs=list(request.set_pairs),
            options=dict(request.engine_options),
            machine=group.machine if group is not None else None,
            size=request.size,
        )
        if setup.default_job_line and number == 0:
            (notice or say)(setup.default_job_line)
        spec = _study_spec(request, setup, fleet, group)
        studies.append(_new_study(request, setup, spec, group, say))
    return studies


def _study_spec(
    request: TuneRequest, setup: Setup, fleet: Fleet | None, group: Group | None
) -> StudySpec:
    """The spec of one new study, warm-started as asked."""
    check_available(request.optimizer, len(request.objectives))
    protocol = request.protocol.model_copy(
        update={"rate_search": list(request.constraints) if request.rate_search else None}
    )
    spec = StudySpec(
        engine=request.engine,
        model=setup.model.ref,
        workload=setup.workload,
        trials=request.trials if request.trials or request.time_budget_s else 12,
        time_budget_s=request.time_budget_s,
        seed=request.seed,
        confirm=request.confirm,
        optimizer=request.optimizer,  # type: ignore[arg-type]
        objectives=list(request.objectives),
        constraints=list(request.constraints),
        protocol=protocol,
        pinned=setup.space.pinned,
        engine_options=dict(request.engine_options),
        trial_timeout_s=request.trial_timeout_s,
        fleet=fleet.spec if fleet is not None else None,
        gpu_model=group.gpu_model if request.per_gpu_model and group is not None else None,
        replay_time_scale=request.replay_time_scale,
    )
    if request.per_gpu_model:
        return warm_start(spec, setup, request.profiles_dir)
    if request.warm_start is not None:
        return warm_start_from(spec, setup, request.warm_start)
    return spec


def _new_study(
    request: TuneRequest, setup: Setup, spec: StudySpec, group: Group | None, say: Say
) -> Study:
    """The study of `spec`, ranked by the prior where one is asked for, in its run directory."""
    prior = request.prior
    predictor = load_prior(prior, setup, say) if prior is not None else None
    if predictor is not None:
        ranked = prior_plan(predictor, setup, spec.goal(), say)
        spec = spec.model_copy(
            update={"prior": ranked, "pibo": request.pibo, "calibrate": request.calibrate}
        )
    where = request.run_dir or run_dir_for(
        Path("runs"), setup.catalogue.engine, setup.model.slug, setup.workload.slug
    )
    if request.per_gpu_model and group is not None:
        where = where.with_name(f"{where.name}--{group.slug}")
    study = Study.create(spec, where, setup)
    study.speed_of_light = getattr(predictor, "with_speed_of_light", None)
    return study


def run_studies(
    studies: Sequence[Study], fleet: Fleet | None = None, observers: Sequence[Observer] = ()
) -> list[StudyOutcome | TunerError]:
    """Runs the studies side by side (each on its own workers, one thread each), each told to
    its observer; a study's one-line error stands in its outcome when several run, so one
    study's failure does not stop the others. Interrupted (or failing), it closes the studies
    (their finished trials are kept), and on Ctrl-C the fleet's workers too, and raises."""
    watching = list(observers) or [NullObserver() for _ in studies]
    try:
        if len(studies) == 1:
            return [_outcome(studies[0], watching[0], fleet)]
        with ThreadPoolExecutor(len(studies)) as pool:
            futures = [
                pool.submit(_outcome, s, o, fleet) for s, o in zip(studies, watching, strict=True)
            ]
            return [f.result() for f in futures]
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt) and fleet is not None:
            fleet.close()  # the studies' threads stop at their next result
        for study in studies:
            study.close()
        raise


def _outcome(study: Study, observer: Observer, fleet: Fleet | None) -> StudyOutcome | TunerError:
    try:
        return study.run(observer, fleet=fleet)
    except TunerError as exc:
        if fleet is None:
            raise
        return exc


def write_study_report(run_dir: Path, say: Say = say_nothing) -> Path | None:
    """A finished study's report in `RUN_DIR/report/`; a report that fails costs no trial or
    profile: one line through `say`, and `tuner report` can make it again."""
    try:
        return write_report(run_dir, run_dir / "report").html
    except TunerError as exc:
        say(f"no report: {exc}")
        return None


def finish(
    study: Study, outcome: StudyOutcome, profiles_dir: Path, say: Say = say_nothing
) -> Finished:
    """A finished study's report and profile, written. A study that found nothing is one
    line (`TunerError`)."""
    report = write_study_report(study.run_dir, say)
    profile = build_profile(study, outcome)
    path = write_profile(profile, profile_path(profiles_dir, profile))
    return Finished(study, outcome, profile, path, report)


def tune(
    request: TuneRequest, fleet: FleetSpec | None = None, say: Say = say_nothing
) -> list[Finished]:
    """`tuner tune`: the request's studies, run (on `fleet`, or one trial at a time on this
    machine) and finished, each with its profile in `request.profiles_dir`. A study that
    found nothing, or failed, raises its one line after the others finished."""
    with maybe_fleet(fleet) as opened:
        studies = new_studies(request, opened, say)
        return _finish_all(studies, run_studies(studies, opened), request.profiles_dir, say)


def resume(
    run_dir: Path,
    *,
    trials: int | None = None,
    time_budget_s: float | None = None,
    fleet: FleetSpec | None = None,
    profiles_dir: Path = Path("profiles"),
    say: Say = say_nothing,
) -> Finished:
    """A study continued from its run directory (on the fleet it ran on, unless another is
    given) and finished; its finished trials are not run again."""
    stored = read_spec(run_dir)
    with maybe_fleet(fleet or stored.fleet) as opened:
        study = resume_study(run_dir, opened, trials=trials, time_budget_s=time_budget_s)
        return _finish_all([study], run_studies([study], opened), profiles_dir, say)[0]


def resume_study(
    run_dir: Path,
    fleet: Fleet | None,
    *,
    trials: int | None = None,
    time_budget_s: float | None = None,
) -> Study:
    """The study in `run_dir`, ready to run on, on its GPU model's workers where a fleet is
    open."""
    stored = read_spec(run_dir)
    machine = None
    if fleet is not None:
        machine = fleet.group(stored.gpu_model, modules_of(stored.engine)).machine
    return Study.resume(run_dir, trials=trials, time_budget_s=time_budget_s, machine=machine)


def _finish_all(
    studies: Sequence[Study],
    outcomes: Sequence[StudyOutcome | TunerError],
    profiles_dir: Path,
    say: Say,
) -> list[Finished]:
    finished, failed = [], None
    try:
        for study, outcome in zip(studies, outcomes, strict=True):
            try:
                if isinstance(outcome, TunerError):
                    raise outcome
                finished.append(finish(study, outcome, profiles_dir, say))
            except TunerError as exc:
                failed = failed or exc
    finally:
        for study in studies:
            study.close()
    if failed is not None:
        raise failed
    return finished


@dataclass(frozen=True)
class BenchRequest(Job):
    """One `tuner bench`: the engine's defaults with the held knobs changed, measured once."""


@dataclass(frozen=True)
class Bench:
    """A configuration ready to measure: its setup, knobs and trial timeout."""

    setup: Setup
    knobs: dict[str, Value]
    protocol: MeasurementProtocol
    timeout_s: float

    def run(self, log_dir: Path, observer: Observer | None = None) -> TrialResult:
        """The configuration measured in a worker of its own, logging into `log_dir`."""
        make_task = partial(self.setup.task, protocol=self.protocol)
        return bench_one(make_task, self.knobs, self.timeout_s, log_dir, observer)


def prepare_bench(request: BenchRequest, say: Say = say_nothing) -> Bench:
    """The request's engine, model, workload and knobs resolved and checked (one line each);
    `say` hears that the default job runs."""
    setup = prepare(
        request.engine,
        request.model,
        request.workload,
        options=dict(request.engine_options),
        size=request.size,
    )
    setup.check_live()
    if setup.default_job_line:
        say(setup.default_job_line)
    knobs = setup.space.complete(setup.space.parse_overrides(list(request.set_pairs)))
    timeout = StudySpec(
        engine=request.engine,
        model=setup.model.ref,
        workload=setup.workload,
        protocol=request.protocol,
        trial_timeout_s=request.trial_timeout_s,
    ).timeout_s()
    return Bench(setup, knobs, request.protocol, timeout)


def bench(request: BenchRequest, log_dir: Path | None = None) -> TrialResult:
    """`tuner bench`: one configuration measured; the worker's log goes to `log_dir` (a
    temporary folder, removed after, when None)."""
    prepared = prepare_bench(request)
    if log_dir is not None:
        return prepared.run(log_dir)
    with tempfile.TemporaryDirectory(prefix="tuner-bench-") as tmp:
        return prepared.run(Path(tmp))
