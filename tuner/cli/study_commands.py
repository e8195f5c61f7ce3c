"""What `tuner tune` and `tuner bench` do with their arguments: set up the studies (one, or one
per GPU model of a fleet), run them with live progress, then write each one's profile and report
and say what it found; or measure one configuration."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape

from tuner.cli.common import emit_json, err, out, user_errors
from tuner.errors import TunerError

if TYPE_CHECKING:
    from tuner.entrypoints import BenchRequest, JsonObject, TuneRequest
    from tuner.execution.executor import Observer
    from tuner.execution.fleet import Fleet, FleetSpec
    from tuner.hardware.machine import Hardware
    from tuner.study.study import Study, StudyOutcome


def say_no_telemetry(hardware: Hardware) -> None:
    """Once per command, not per trial: why there will be no energy figures."""
    if not hardware.gpus:
        err.print(
            f"[dim]no GPU telemetry on this machine: {escape(str(hardware.no_gpu_reason))}[/]"
        )


def run_tune(
    request: TuneRequest,
    fleet_given: FleetSpec | None,
    resume: Path | None,
    *,
    json_: bool,
    quiet: bool,
) -> None:
    """`tuner tune`: a new study (or one per GPU model of the fleet), or a resumed one (which
    keeps only the request's budgets), run and finished."""
    from tuner.entrypoints import maybe_fleet, new_studies, resume_study, say_nothing
    from tuner.files import check_writable
    from tuner.study.rundir import read_spec

    quiet = quiet or json_
    profiles_dir = request.profiles_dir
    with user_errors():
        check_writable(profiles_dir, "profiles folder")
        if resume is not None:
            stored = read_spec(resume)
            with maybe_fleet(fleet_given or stored.fleet, _say_dim) as fleet:
                study = resume_study(
                    resume, fleet, trials=request.trials, time_budget_s=request.time_budget_s
                )
                run_studies([study], profiles_dir, fleet=fleet, json_=json_, quiet=quiet)
            return
        with maybe_fleet(fleet_given, _say_dim) as fleet:
            notice = say_nothing if quiet else _say_dim
            studies = new_studies(request, fleet, say=_say, notice=notice)
            run_studies(studies, profiles_dir, fleet=fleet, json_=json_, quiet=quiet)


def _say(line: str) -> None:
    err.print(escape(line))


def _say_dim(line: str) -> None:
    err.print(f"[dim]{escape(line)}[/]")


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
        for study in studies:
            err.print(
                f"\ninterrupted: finished trials are kept; resume with "
                f"tuner tune --resume {study.run_dir}"
            )
        raise typer.Exit(130) from None
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
    on = f" · on {fleet.spec.describe()}" if fleet is not None else ""
    for study, before in zip(studies, done, strict=True):
        engine, _, rest = study.headline(before).partition(" · ")
        err.print(f"[bold]{engine}[/] · {rest}{on}")
        if study.repaired:
            err.print(f"[yellow]{escape(study.repaired)}[/]")
    say_no_telemetry(studies[0].setup.hardware)


def _run_all(
    studies: Sequence[Study], done: list[int], fleet: Fleet | None, quiet: bool
) -> list[StudyOutcome | TunerError]:
    """Each study's outcome (or its one-line error), with live progress unless `quiet`."""
    from tuner.entrypoints import run_studies as run_side_by_side
    from tuner.execution.executor import NullObserver
    from tuner.report.terminal import StudyView, study_progress

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
) -> JsonObject | None:
    """Writes a finished study's report and profile and says what it found; returns what
    --json prints for it."""
    from tuner.entrypoints import finish, say_nothing
    from tuner.report.terminal import profile_table, trials_table

    if outcome.best is None:
        _nothing_found(study, outcome, quiet)
    with user_errors():
        done = finish(study, outcome, profiles_dir, say=say_nothing if quiet else _say_yellow)
    if json_:
        return done.as_json()
    if not quiet:
        out.print(trials_table(outcome.results, outcome.best, out.width, study.goal))
        if done.versus_table is None:  # a replay's profile holds the table's figures
            out.print(profile_table(done.profile))
            out.print(f"stopped: {outcome.stopped}")
    for line in done.lines():
        out.print(escape(line))
    return None


def _nothing_found(study: Study, outcome: StudyOutcome, quiet: bool) -> None:
    """Why a study has no best configuration, and exit 1."""
    from tuner.report.terminal import trials_table

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


def _say_yellow(line: str) -> None:
    head, _, rest = line.partition(": ")
    err.print(f"[yellow]{escape(head)}:[/] {escape(rest)}")


def run_bench(request: BenchRequest, *, json_: bool, quiet: bool) -> None:
    """`tuner bench`: one configuration measured (the engine's defaults with --set changes),
    shown, and exit 1 unless it ran cleanly."""
    import shutil
    import tempfile

    from tuner.entrypoints import prepare_bench, say_nothing
    from tuner.execution.executor import NullObserver
    from tuner.measure.objective import THROUGHPUT
    from tuner.report.terminal import StudyView, measurement_table

    quiet = quiet or json_
    with user_errors():
        prepared = prepare_bench(request, say=say_nothing if quiet else _say_dim)
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
