"""What `tuner tune` and `tuner bench` do with their arguments: set up the studies (one, or one
per GPU model of a fleet), run them with live progress, then write each one's profile and report
and say what it found; or measure one configuration."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from tuner.cli.common import emit_json, err, out, user_errors
from tuner.cli.options import BenchArgs, TuneArgs
from tuner.errors import TunerError

if TYPE_CHECKING:
    from tuner.execution.fleet import Fleet, FleetSpec
    from tuner.hardware.machine import Hardware
    from tuner.study.study import Study, StudyOutcome


def say_no_telemetry(hardware: Hardware) -> None:
    """Once per command, not per trial: why there will be no energy figures."""
    if not hardware.gpus:
        err.print(
            f"[dim]no GPU telemetry on this machine: {escape(str(hardware.no_gpu_reason))}[/]"
        )


@contextlib.contextmanager
def maybe_fleet(spec: FleetSpec | None) -> Iterator[Fleet | None]:
    """The open fleet `spec` names, or None."""
    if spec is None:
        yield None
        return
    from tuner.execution.fleet import open_fleet

    if not (spec.scheduler or spec.cluster != "local"):
        err.print(f"[dim]starting {spec.describe()}[/]")
    with open_fleet(spec) as fleet:
        yield fleet


def run_tune(args: TuneArgs) -> None:
    """`tuner tune`: a new study (or one per GPU model of the fleet), or a resumed one, run and
    finished."""
    from tuner.files import check_writable
    from tuner.study.rundir import read_spec
    from tuner.study.study import Study

    json_, quiet = args.json_, args.quiet or args.json_
    with user_errors():
        check_writable(args.profiles_dir, "profiles folder")
        fleet_given = args.fleet.spec()
        if args.resume is not None:
            stored = read_spec(args.resume)
            with maybe_fleet(fleet_given or stored.fleet) as fleet:
                machine = None
                if fleet is not None:
                    machine = fleet.group(stored.gpu_model, modules_of(stored.engine)).machine
                study = Study.resume(
                    args.resume,
                    trials=args.search.trials,
                    time_budget_s=args.search.time_budget,
                    machine=machine,
                )
                run_studies([study], args.profiles_dir, fleet=fleet, json_=json_, quiet=quiet)
            return
        with maybe_fleet(fleet_given) as fleet:
            studies = new_studies(fleet, args)
            run_studies(studies, args.profiles_dir, fleet=fleet, json_=json_, quiet=quiet)


def modules_of(engine: str) -> list[str]:
    """The Python modules an engine's platform facts depend on."""
    from tuner.study.prepare import catalogue_of

    return sorted(catalogue_of(engine).modules())


def _check_tune(args: TuneArgs, fleet: Fleet | None) -> None:
    """Options that do not go together: one line."""
    from tuner.optimizers import GUIDED
    from tuner.replay.replay import is_replay

    search, per_gpu_model = args.search, args.fleet.per_gpu_model
    if per_gpu_model and fleet is None:
        raise TunerError("--per-gpu-model splits a fleet: give --workers or --dask-scheduler")
    if per_gpu_model and search.warm_start is not None:
        raise TunerError("--warm-start is for one study; --per-gpu-model warm-starts each itself")
    if search.replay_time_scale and not is_replay(args.job.engine):
        raise TunerError("--replay-time-scale is for replays (--engine replay:TABLE)")
    if search.pibo and search.prior is None:
        raise TunerError("--pibo weights the search by a prior: give --prior too")
    if search.pibo and search.optimizer not in GUIDED:
        raise TunerError(
            f"--pibo weights the acquisition of {' or '.join(GUIDED)}, not of "
            f"{search.optimizer}: add --optimizer gp"
        )
    if is_replay(args.job.engine) and args.job.model is not None:
        raise TunerError("a replay takes its model and workload from the table")


def new_studies(fleet: Fleet | None, args: TuneArgs) -> list[Study]:
    """The new studies of one `tuner tune`: one, or one per GPU model of the fleet (each in a
    run directory of its own, warm-started from another model's profile where it has none)."""
    from tuner.replay.replay import is_replay
    from tuner.specs.workloads import load_workload
    from tuner.study.prepare import prepare

    protocol, options = args.measure.protocol(), args.server.options()
    objectives, constraints = args.goal.resolve()
    _check_tune(args, fleet)
    job = args.job
    model: str | None = job.model
    workload: Any = job.workload
    if not is_replay(job.engine):
        model, requests, output_tokens = job.sized(args.quiet or args.json_)
        workload = load_workload(
            job.workload, requests=requests, output_tokens=output_tokens, time_scale=job.time_scale
        )
    per_gpu_model = args.fleet.per_gpu_model
    groups: list[Any] = [None]
    if fleet is not None:
        modules = modules_of(job.engine)
        groups = fleet.groups(modules) if per_gpu_model else [fleet.group(None, modules)]
    studies = []
    for group in groups:
        # Parse --set against the catalogue before anything slow happens.
        setup = prepare(
            job.engine,
            model or "",
            workload,
            set_pairs=args.server.set_pairs(job.set_),
            options=options,
            machine=group.machine if group is not None else None,
        )
        protocol = protocol.model_copy(
            update={"rate_search": args.goal.rate_limits(constraints, options)}
        )
        spec = _study_spec(args, setup, protocol, (objectives, constraints), fleet, group)
        studies.append(_new_study(args, setup, spec, group))
    return studies


def _study_spec(
    args: TuneArgs,
    setup: Any,
    protocol: Any,
    goal: tuple[list[str], list[str]],
    fleet: Fleet | None,
    group: Any,
) -> Any:
    """The spec of one new study, warm-started as asked."""
    from tuner.optimizers import check_available
    from tuner.study.rundir import StudySpec
    from tuner.study.study import warm_start, warm_start_from

    search, (objectives, constraints) = args.search, goal
    check_available(search.optimizer, len(objectives))
    spec = StudySpec(
        engine=args.job.engine,
        model=setup.model.ref,
        workload=setup.workload,
        trials=search.trials if search.trials or search.time_budget else 12,
        time_budget_s=search.time_budget,
        seed=search.seed,
        confirm=search.confirm,
        optimizer=search.optimizer,  # type: ignore[arg-type]
        objectives=objectives,
        constraints=constraints,
        protocol=protocol,
        pinned=setup.space.pinned,
        engine_options=args.server.options(),
        trial_timeout_s=args.measure.trial_timeout,
        fleet=fleet.spec if fleet is not None else None,
        gpu_model=group.gpu_model if args.fleet.per_gpu_model else None,
        replay_time_scale=search.replay_time_scale,
    )
    if args.fleet.per_gpu_model:
        return warm_start(spec, setup, args.profiles_dir)
    if search.warm_start is not None:
        return warm_start_from(spec, setup, search.warm_start)
    return spec


def _new_study(args: TuneArgs, setup: Any, spec: Any, group: Any) -> Any:
    """The study of `spec`, ranked by the prior where one is asked for, in its run directory."""
    from tuner.study.prior import load_prior, prior_plan
    from tuner.study.rundir import run_dir_for
    from tuner.study.study import Study

    say = lambda line: err.print(escape(line))  # noqa: E731
    prior = args.search.prior
    predictor = load_prior(prior, setup, say) if prior is not None else None
    if predictor is not None:
        ranked = prior_plan(predictor, setup, spec.goal(), say)
        spec = spec.model_copy(
            update={"prior": ranked, "pibo": args.search.pibo, "calibrate": args.search.calibrate}
        )
    where = args.search.run_dir or run_dir_for(
        Path("runs"), setup.catalogue.engine, setup.model.slug, setup.workload.slug
    )
    if args.fleet.per_gpu_model:
        where = where.with_name(f"{where.name}--{group.slug}")
    study = Study.create(spec, where, setup)
    study.speed_of_light = getattr(predictor, "with_speed_of_light", None)
    return study


def run_studies(
    studies: Sequence[Study], profiles_dir: Path, *, fleet: Fleet | None, json_: bool, quiet: bool
) -> None:
    """Runs the studies side by side (each on its own workers), then finishes each: profile,
    report, summary. Exit 1 when any found nothing, 130 when interrupted."""
    from tuner.study.rundir import read_trials

    done = [len(read_trials(s.trials_path)) for s in studies]
    if not quiet:
        _announce(studies, done, fleet)
    try:
        outcomes = _run_all(studies, done, fleet, quiet)
    except KeyboardInterrupt:
        if fleet is not None:
            fleet.close()  # the studies' threads stop at their next result
        for study in studies:
            study.close()
            err.print(
                f"\ninterrupted: finished trials are kept; resume with "
                f"tuner tune --resume {study.run_dir}"
            )
        raise typer.Exit(130) from None
    except BaseException:
        for study in studies:
            study.close()
        raise
    code, payloads = 0, []
    for study, outcome in zip(studies, outcomes, strict=True):
        if isinstance(outcome, TunerError):
            err.print(f"[red]{escape(study.spec.gpu_model or 'study')}:[/] {escape(str(outcome))}")
            code = max(code, 2)
            continue
        try:
            payloads.append(finish_study(study, outcome, profiles_dir, json_=json_, quiet=quiet))
        except typer.Exit as exc:
            code = max(code, exc.exit_code)
        finally:
            study.close()
    if json_ and payloads:
        emit_json(payloads[0] if len(studies) == 1 else {"studies": payloads})
    if code:
        raise typer.Exit(code)


def _announce(studies: Sequence[Study], done: list[int], fleet: Fleet | None) -> None:
    """A line per study: what it tunes, where, and how far an earlier session got."""
    for study, before in zip(studies, done, strict=True):
        s = study.setup
        err.print(
            f"[bold]{s.catalogue.engine}[/] · {s.model.ref} · {s.workload.name}"
            + (f" ({len(s.requests)} requests)" if s.requests else " (recorded)")
            + f" · {s.hardware.gpu_name} · run dir {study.run_dir}"
            + (f" · on {fleet.spec.describe()}" if fleet is not None else "")
            + (f" · resuming after {before} trials" if before else "")
        )
        if study.repaired:
            err.print(f"[yellow]{escape(study.repaired)}[/]")
    say_no_telemetry(studies[0].setup.hardware)


def _run_all(
    studies: Sequence[Study], done: list[int], fleet: Fleet | None, quiet: bool
) -> list[Any]:
    """Each study's outcome (or its one-line error), with live progress unless `quiet`."""
    from tuner.cli.console import StudyView, study_progress
    from tuner.execution.executor import NullObserver

    labels = [s.spec.gpu_model or "" for s in studies] if len(studies) > 1 else [""]
    with contextlib.ExitStack() as stack:
        observers: list[Any] = [NullObserver() for _ in studies]
        if not quiet:
            progress = stack.enter_context(study_progress(err))
            observers = [
                StudyView(
                    err,
                    s.spec.trials + s.spec.confirm if s.spec.trials else None,
                    before,
                    label=label,
                    progress=progress,
                )
                for s, before, label in zip(studies, done, labels, strict=True)
            ]
        if len(studies) == 1:
            return [_outcome(studies[0], observers[0], fleet)]
        with ThreadPoolExecutor(len(studies)) as pool:
            futures = [
                pool.submit(_outcome, s, o, fleet) for s, o in zip(studies, observers, strict=True)
            ]
            return [f.result() for f in futures]


def _outcome(study: Study, observer: Any, fleet: Fleet | None) -> Any:
    """A study's outcome, or its one-line error when several run side by side (one study's
    failure does not stop the others)."""
    try:
        return study.run(observer, fleet=fleet)
    except TunerError as exc:
        if fleet is None:
            raise
        return exc


def finish_study(
    study: Study, outcome: StudyOutcome, profiles_dir: Path, *, json_: bool, quiet: bool
) -> dict[str, Any] | None:
    """Writes a finished study's report and profile and says what it found; returns what
    --json prints for it."""
    from tuner.cli.console import profile_table, trials_table
    from tuner.profiles.profile import profile_path, write_profile
    from tuner.replay.replay import is_replay
    from tuner.study.profile import build_profile

    if outcome.best is None:
        _nothing_found(study, outcome, quiet)
    report = study_report(study.run_dir, quiet=quiet)
    profile = build_profile(study, outcome)
    with user_errors():
        path = write_profile(profile, profile_path(profiles_dir, profile))
    if is_replay(study.spec.engine):
        return _replay_summary(study, outcome, path, json_=json_, quiet=quiet)
    if json_:
        return _json_summary(study, outcome, profile, path, report)
    if not quiet:
        out.print(trials_table(outcome.results, outcome.best, out.width, study.goal))
        out.print(profile_table(profile))
        out.print(f"stopped: {outcome.stopped}")
    out.print(f"profile written: {path}")
    if report is not None:
        out.print(f"report written: {report}")
    return None


def _nothing_found(study: Study, outcome: StudyOutcome, quiet: bool) -> None:
    """Why a study has no best configuration, and exit 1."""
    from tuner.cli.console import trials_table

    goal = study.goal
    ran = [r for r in outcome.results if r.status == "ok"]
    if ran and goal.constraints:
        limits = ", ".join(c.text for c in goal.constraints)
        err.print(
            f"[red]no configuration met the limits[/] ({limits}): "
            f"{len(ran)} of {len(outcome.results)} trials ran, none within them; no "
            f"profile written. Trials and worker logs: {study.run_dir}"
        )
    else:
        err.print(
            f"[red]no trial succeeded[/] ({len(outcome.results)} trials); see the trials "
            f"and worker logs in {study.run_dir}"
        )
    if not quiet:
        out.print(trials_table(outcome.results, None, out.width, goal))
    raise typer.Exit(1)


def _json_summary(
    study: Study, outcome: StudyOutcome, profile: Any, path: Path, report: Path | None
) -> dict[str, Any]:
    """What --json prints for a measured study."""
    goal = study.goal
    return {
        "profile": str(path),
        "report": str(report) if report else None,
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


def study_report(run_dir: Path, *, quiet: bool) -> Path | None:
    """A finished study's report in `RUN_DIR/report/`; a report that fails costs no trial or
    profile: it is one line, and `tuner report` can make it again."""
    from tuner.report.report import write_report

    try:
        return write_report(run_dir, run_dir / "report").html
    except TunerError as exc:
        if not quiet:
            err.print(f"[yellow]no report:[/] {escape(str(exc))}")
        return None


def _replay_summary(
    study: Study, outcome: StudyOutcome, profile: Path, *, json_: bool, quiet: bool
) -> dict[str, Any] | None:
    """A replayed study's pick against the table's optimum under the same goal; its profile
    is the table's machine's, with recorded figures."""
    from tuner.cli.console import trials_table

    table = study.setup.replay.table
    goal = study.goal
    optimum = table.optimum(goal)
    best = outcome.best
    picked, top = goal.value(best), goal.value(optimum)
    ratio = picked / top if goal.maximize else top / picked
    cost = outcome.gpu_s
    if json_:
        return {
            "run_dir": str(study.run_dir),
            "profile": str(profile),
            "objective": goal.name,
            "best": {"knobs": best.knobs, goal.name: picked},
            "table_optimum": {"knobs": optimum.knobs, goal.name: top},
            "ratio_to_optimum": ratio,
            "recorded_gpu_s": cost,
            "trials": len(outcome.results),
        }
    if not quiet:
        out.print(trials_table(outcome.results, best, out.width, goal))
    measured_by = f" as measured by {table.source.line}" if table.source else ""
    out.print(
        f"replay of {table.gpu.name}{measured_by}: best {goal.primary.fmt(picked)} ({goal.label}), "
        f"{ratio:.1%} of the table's optimum ({goal.primary.fmt(top)}), "
        f"{len(outcome.results)} trials, {cost:,.0f} recorded GPU-seconds"
    )
    out.print(f"profile written: {profile} (the table's machine and recorded figures)")
    return None


def run_bench(args: BenchArgs) -> None:
    """`tuner bench`: one configuration measured (the engine's defaults with --set changes),
    shown, and exit 1 unless it ran cleanly."""
    import shutil
    import tempfile
    from functools import partial

    from tuner.cli.console import StudyView, measurement_table
    from tuner.execution.executor import NullObserver, bench
    from tuner.measure.objective import THROUGHPUT
    from tuner.replay.replay import is_replay
    from tuner.specs.workloads import load_workload
    from tuner.study.prepare import prepare
    from tuner.study.rundir import StudySpec

    job, json_, quiet = args.job, args.json_, args.quiet or args.json_
    with user_errors():
        if is_replay(job.engine):
            raise TunerError("a replay answers studies only (tuner tune); bench runs an engine")
        model, requests, output_tokens = job.sized(quiet)
        workload = load_workload(
            job.workload, requests=requests, output_tokens=output_tokens, time_scale=job.time_scale
        )
        setup = prepare(job.engine, model, workload, options=args.server.options())
        knobs = setup.space.complete(setup.space.parse_overrides(args.server.set_pairs(job.set_)))
        protocol = args.measure.protocol()
        timeout = StudySpec(
            engine=job.engine,
            model=model,
            workload=workload,
            protocol=protocol,
            trial_timeout_s=args.measure.trial_timeout,
        ).timeout_s()
        make_task = partial(setup.task, protocol=protocol)
    if not quiet:
        say_no_telemetry(setup.hardware)
    log_dir = Path(tempfile.mkdtemp(prefix="tuner-bench-"))
    try:
        if quiet:
            result = bench(make_task, knobs, timeout, log_dir, NullObserver())
        else:
            with StudyView(err, 1) as view:
                result = bench(make_task, knobs, timeout, log_dir, view)
    except KeyboardInterrupt:
        err.print("interrupted: nothing was measured")
        raise typer.Exit(130) from None
    if json_:
        emit_json(result.model_dump(mode="json"))
    elif not quiet:
        out.print(measurement_table(result))
    if result.status != "ok":
        err.print(
            f"[red]{result.status}[/]: {escape(str(result.reason))} (worker log: {result.log})"
        )
        raise typer.Exit(1)
    unclean = THROUGHPUT.feasible(result)
    if unclean is not None:
        err.print(f"[red]not a clean measurement[/]: {escape(unclean)} (worker log: {result.log})")
        raise typer.Exit(1)
    shutil.rmtree(log_dir, ignore_errors=True)  # a clean measurement needs no log kept
