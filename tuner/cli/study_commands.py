"""What `tuner tune` and `tuner bench` do with their arguments: set up the studies (one, or one
per GPU model of a fleet), run them with live progress, then write each one's profile and report
and say what it found; or measure one configuration."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape

from tuner.cli.common import emit_json, err, out, user_errors
from tuner.cli.options import BenchArgs, TuneArgs
from tuner.errors import TunerError

if TYPE_CHECKING:
    from tuner.entrypoints import TuneRequest
    from tuner.execution.executor import Observer
    from tuner.execution.fleet import Fleet, FleetSpec
    from tuner.hardware.machine import Hardware
    from tuner.profiles.profile import Profile
    from tuner.study.study import Study, StudyOutcome


def say_no_telemetry(hardware: Hardware) -> None:
    """Once per command, not per trial: why there will be no energy figures."""
    if not hardware.gpus:
        err.print(
            f"[dim]no GPU telemetry on this machine: {escape(str(hardware.no_gpu_reason))}[/]"
        )


@contextlib.contextmanager
def open_fleet(spec: FleetSpec | None) -> Iterator[Fleet | None]:
    """The open fleet `spec` names (said on stderr when tuner starts it), or None."""
    from tuner.entrypoints import maybe_fleet

    if spec is not None and not (spec.scheduler or spec.cluster != "local"):
        err.print(f"[dim]starting {spec.describe()}[/]")
    with maybe_fleet(spec) as fleet:
        yield fleet


def run_tune(args: TuneArgs) -> None:
    """`tuner tune`: a new study (or one per GPU model of the fleet), or a resumed one, run and
    finished."""
    from tuner.entrypoints import new_studies, resume_study
    from tuner.files import check_writable
    from tuner.study.rundir import read_spec

    json_, quiet = args.json_, args.quiet or args.json_
    with user_errors():
        check_writable(args.profiles_dir, "profiles folder")
        fleet_given = args.fleet.spec()
        if args.resume is not None:
            stored = read_spec(args.resume)
            with open_fleet(fleet_given or stored.fleet) as fleet:
                study = resume_study(
                    args.resume,
                    fleet,
                    trials=args.search.trials,
                    time_budget_s=args.search.time_budget,
                )
                run_studies([study], args.profiles_dir, fleet=fleet, json_=json_, quiet=quiet)
            return
        with open_fleet(fleet_given) as fleet:
            studies = new_studies(tune_request(args, fleet), fleet, say=_say)
            run_studies(studies, args.profiles_dir, fleet=fleet, json_=json_, quiet=quiet)


def _say(line: str) -> None:
    err.print(escape(line))


def tune_request(args: TuneArgs, fleet: Fleet | None) -> TuneRequest:
    """What the options ask of `tuner.entrypoints`, checked (one line)."""
    from tuner.entrypoints import TuneRequest
    from tuner.replay.replay import is_replay
    from tuner.specs.workloads import load_workload

    job, search = args.job, args.search
    options = args.server.options()
    objectives, constraints = args.goal.resolve()
    request = TuneRequest(
        engine=job.engine,
        model=job.model or "",
        workload=job.workload,
        set_pairs=args.server.set_pairs(job.set_),
        engine_options=options,
        protocol=args.measure.protocol(),
        objectives=objectives,
        constraints=constraints,
        optimizer=search.optimizer,
        trials=search.trials,
        time_budget_s=search.time_budget,
        seed=search.seed,
        confirm=search.confirm,
        trial_timeout_s=args.measure.trial_timeout,
        prior=search.prior,
        pibo=search.pibo,
        calibrate=search.calibrate,
        warm_start=search.warm_start,
        replay_time_scale=search.replay_time_scale,
        run_dir=search.run_dir,
        profiles_dir=args.profiles_dir,
        per_gpu_model=args.fleet.per_gpu_model,
        rate_search=args.goal.rate_limits(constraints, options),
    )
    request.check(fleet)
    if is_replay(job.engine):
        return request
    model, requests, output_tokens = job.sized(args.quiet or args.json_)
    workload = load_workload(
        job.workload, requests=requests, output_tokens=output_tokens, time_scale=job.time_scale
    )
    return replace(request, model=model, workload=workload)


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
) -> list[StudyOutcome | TunerError]:
    """Each study's outcome (or its one-line error), with live progress unless `quiet`."""
    from tuner.cli.console import StudyView, study_progress
    from tuner.entrypoints import run_studies as run_side_by_side
    from tuner.execution.executor import NullObserver

    labels = [s.spec.gpu_model or "" for s in studies] if len(studies) > 1 else [""]
    with contextlib.ExitStack() as stack:
        observers: list[Observer] = [NullObserver() for _ in studies]
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
        return run_side_by_side(studies, fleet, observers)


def finish_study(
    study: Study, outcome: StudyOutcome, profiles_dir: Path, *, json_: bool, quiet: bool
) -> dict[str, Any] | None:
    """Writes a finished study's report and profile and says what it found; returns what
    --json prints for it."""
    from tuner.cli.console import profile_table, trials_table
    from tuner.entrypoints import finish, say_nothing
    from tuner.replay.replay import is_replay

    if outcome.best is None:
        _nothing_found(study, outcome, quiet)
    with user_errors():
        done = finish(study, outcome, profiles_dir, say=say_nothing if quiet else _say_yellow)
    profile, path, report = done.profile, done.path, done.report
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
    study: Study, outcome: StudyOutcome, profile: Profile, path: Path, report: Path | None
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


def _say_yellow(line: str) -> None:
    head, _, rest = line.partition(": ")
    err.print(f"[yellow]{escape(head)}:[/] {escape(rest)}")


def _replay_summary(
    study: Study, outcome: StudyOutcome, profile: Path, *, json_: bool, quiet: bool
) -> dict[str, Any] | None:
    """A replayed study's pick against the table's optimum under the same goal; its profile
    is the table's machine's, with recorded figures."""
    from tuner.cli.console import trials_table

    replay, best = study.setup.replay, outcome.best
    assert replay is not None and best is not None  # a replayed study that found a best
    table, goal = replay.table, study.goal
    optimum = table.optimum(goal)
    picked, top = goal.value(best), goal.value(optimum)
    assert picked is not None and top is not None  # a table records its goal's figure
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

    from tuner.cli.console import StudyView, measurement_table
    from tuner.entrypoints import BenchRequest, prepare_bench
    from tuner.execution.executor import NullObserver
    from tuner.measure.objective import THROUGHPUT
    from tuner.replay.replay import is_replay
    from tuner.specs.workloads import load_workload

    job, json_, quiet = args.job, args.json_, args.quiet or args.json_
    with user_errors():
        if is_replay(job.engine):
            raise TunerError("a replay answers studies only (tuner tune); bench runs an engine")
        model, requests, output_tokens = job.sized(quiet)
        workload = load_workload(
            job.workload, requests=requests, output_tokens=output_tokens, time_scale=job.time_scale
        )
        prepared = prepare_bench(
            BenchRequest(
                engine=job.engine,
                model=model,
                workload=workload,
                set_pairs=args.server.set_pairs(job.set_),
                engine_options=args.server.options(),
                protocol=args.measure.protocol(),
                trial_timeout_s=args.measure.trial_timeout,
            )
        )
    if not quiet:
        say_no_telemetry(prepared.setup.hardware)
    log_dir = Path(tempfile.mkdtemp(prefix="tuner-bench-"))
    try:
        if quiet:
            result = prepared.run(log_dir, NullObserver())
        else:
            with StudyView(err, 1) as view:
                result = prepared.run(log_dir, view)
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
