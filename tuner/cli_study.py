"""`tuner tune`'s second half: running the studies (one, or one per GPU model of a fleet) with
live progress, then writing each one's profile and report and saying what it found."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from tuner.cli_common import emit_json, err, out, user_errors
from tuner.errors import TunerError


def say_no_telemetry(hardware: Any) -> None:
    """Once per command, not per trial: why there will be no energy figures."""
    if not hardware.gpus:
        err.print(
            f"[dim]no GPU telemetry on this machine: {escape(str(hardware.no_gpu_reason))}[/]"
        )


def fleet_spec(
    workers: int | None, scheduler: str | None, cluster: str, gpus_per_worker: int
) -> Any:
    """The fleet the options name, or None for trials one at a time on this machine."""
    from tuner.fleet import CLUSTERS, FleetSpec

    if cluster not in CLUSTERS:
        raise TunerError(f"--cluster takes {', '.join(CLUSTERS)}, not {cluster!r}")
    if scheduler and (workers or cluster != "local"):
        raise TunerError("--dask-scheduler uses a running cluster: leave out --workers/--cluster")
    if cluster != "local" and not workers:
        raise TunerError(f"--cluster {cluster} submits worker jobs: say how many with --workers")
    if not (workers or scheduler):
        if gpus_per_worker != 1:
            raise TunerError("--gpus-per-worker goes with --workers or --cluster")
        return None
    return FleetSpec(
        cluster=cluster,  # type: ignore[arg-type]
        workers=workers,
        scheduler=scheduler,
        gpus_per_worker=gpus_per_worker,
    )


@contextlib.contextmanager
def maybe_fleet(spec: Any) -> Iterator[Any]:
    """The open fleet `spec` names, or None."""
    if spec is None:
        yield None
        return
    from tuner.fleet import open_fleet

    if not (spec.scheduler or spec.cluster != "local"):
        err.print(f"[dim]starting {spec.describe()}[/]")
    with open_fleet(spec) as fleet:
        yield fleet


def run_studies(
    studies: Sequence[Any], profiles_dir: Path, *, fleet: Any, json_: bool, quiet: bool
) -> None:
    """Runs the studies side by side (each on its own workers), then finishes each: profile,
    report, summary. Exit 1 when any found nothing, 130 when interrupted."""
    from tuner.console import StudyView, study_progress
    from tuner.executor import NullObserver
    from tuner.rundir import read_trials

    labels = [s.spec.gpu_model or "" for s in studies] if len(studies) > 1 else [""]
    done = [len(read_trials(s.trials_path)) for s in studies]
    if not quiet:
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
    outcomes: list[Any] = []
    try:
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
                outcomes = [_outcome(studies[0], observers[0], fleet)]
            else:
                with ThreadPoolExecutor(len(studies)) as pool:
                    futures = [
                        pool.submit(_outcome, s, o, fleet)
                        for s, o in zip(studies, observers, strict=True)
                    ]
                    outcomes = [f.result() for f in futures]
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


def _outcome(study: Any, observer: Any, fleet: Any) -> Any:
    """A study's outcome, or its one-line error when several run side by side (one study's
    failure does not stop the others)."""
    try:
        return study.run(observer, fleet=fleet)
    except TunerError as exc:
        if fleet is None:
            raise
        return exc


def finish_study(
    study: Any, outcome: Any, profiles_dir: Path, *, json_: bool, quiet: bool
) -> dict[str, Any] | None:
    """Writes a finished study's report and profile and says what it found; returns what
    --json prints for it."""
    from tuner.console import profile_table, trials_table
    from tuner.profiles import build_profile, profile_path, write_profile
    from tuner.replay import is_replay

    goal = study.goal
    if outcome.best is None:
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
    report = study_report(study.run_dir, quiet=quiet)
    profile = build_profile(study, outcome)
    with user_errors():
        path = write_profile(profile, profile_path(profiles_dir, profile))
    if is_replay(study.spec.engine):
        return _replay_summary(study, outcome, path, json_=json_, quiet=quiet)
    if json_:
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
    if not quiet:
        out.print(trials_table(outcome.results, outcome.best, out.width, goal))
        out.print(profile_table(profile))
        out.print(f"stopped: {outcome.stopped}")
    out.print(f"profile written: {path}")
    if report is not None:
        out.print(f"report written: {report}")
    return None


def study_report(run_dir: Path, *, quiet: bool) -> Path | None:
    """A finished study's report in `RUN_DIR/report/`; a report that fails costs no trial or
    profile: it is one line, and `tuner report` can make it again."""
    from tuner.report import write_report

    try:
        return write_report(run_dir, run_dir / "report").html
    except TunerError as exc:
        if not quiet:
            err.print(f"[yellow]no report:[/] {escape(str(exc))}")
        return None


def _replay_summary(
    study: Any, outcome: Any, profile: Path, *, json_: bool, quiet: bool
) -> dict[str, Any] | None:
    """A replayed study's pick against the table's optimum under the same goal; its profile
    is the table's machine's, with recorded figures."""
    from tuner.console import trials_table

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
