"""The `tuner` command line: parses options and calls one library function per command.

Exit codes: 0 done; 1 the work ran but no configuration succeeded; 2 bad input (one line on
stderr); 3 a regression (`tuner ci`); 130 interrupted (finished trials are kept in the run
directory).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from tuner.cli.common import Json, Quiet, emit_json, err, out, user_errors
from tuner.cli.options import (
    Cluster,
    Concurrency,
    DaskScheduler,
    Engine,
    GpusPerWorker,
    MaxCv,
    MaxJoules,
    MaxMemory,
    MaxPower,
    MaxRemeasures,
    Objectives,
    OutputTokens,
    PerGpuModel,
    Port,
    RateSearch,
    Repeats,
    ReplayTimeScale,
    RequestRate,
    Requests,
    RunLimit,
    SamplePeriod,
    ServerCmd,
    ServerDialect,
    SetKnob,
    Slo,
    TimeScale,
    TrialTimeout,
    WarmupLimit,
    Workers,
    Workload,
    engine_options,
    held,
    protocol,
)
from tuner.cli.profile_commands import profile_app
from tuner.cli.study_commands import run_bench, run_tune
from tuner.models import DEFAULT_MODEL

EXIT_CODES = (
    "Exit codes: 0 done; 1 ran, but no configuration succeeded; 2 bad input; "
    "3 (tuner ci) throughput fell below the profile by more than the tolerance, or the held "
    "configuration broke the profile's limits; "
    "130 interrupted (finished trials are kept)."
)
app = typer.Typer(
    help=f"Find the fastest serving configuration of an LLM engine on this machine. {EXIT_CODES}",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(profile_app, name="profile")


@app.command(epilog=EXIT_CODES)
def tune(
    engine: Engine = "hf",
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="A local folder, a Hub id already in the local cache, "
            f"or synthetic:NAME (default: {DEFAULT_MODEL}, the embedded default job).",
        ),
    ] = None,
    workload: Workload = "humaneval",
    trials: Annotated[
        int | None, typer.Option("--trials", "-n", min=1, help="Trial budget, baseline included.")
    ] = None,
    time_budget: Annotated[
        float | None, typer.Option(min=1, help="Wall-clock budget in seconds.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the search.")] = 0,
    confirm: Annotated[
        int,
        typer.Option(
            min=0,
            help="Measure the best N configurations again on fresh repeats after the search "
            "(outside --trials); the profile keeps the best of those.",
        ),
    ] = 2,
    optimizer: Annotated[
        str,
        typer.Option(
            help="ladder (line searches on the load, layouts ranked by a model; the default), "
            "gp (SMAC BlackBoxFacade), rf (SMAC HyperparameterOptimizationFacade), random, "
            "optuna-tpe (Optuna's TPE), hyperopt-tpe (Hyperopt's TPE) or descend (largest "
            "load first, one step down until it counts, layout by layout)."
        ),
    ] = "ladder",
    requests: Requests = None,
    output_tokens: OutputTokens = None,
    time_scale: TimeScale = None,
    set_: SetKnob = None,
    repeats: Repeats = 3,
    run_time_limit: RunLimit = 60.0,
    warmup_time_limit: WarmupLimit = 180.0,
    max_cv: MaxCv = 0.10,
    max_remeasures: MaxRemeasures = 2,
    sample_period: SamplePeriod = 0.05,
    trial_timeout: TrialTimeout = None,
    server_cmd: ServerCmd = None,
    port: Port = None,
    concurrency: Concurrency = None,
    request_rate: RequestRate = None,
    server_dialect: ServerDialect = None,
    objective: Objectives = None,
    slo: Slo = None,
    max_memory_mib: MaxMemory = None,
    max_power_w: MaxPower = None,
    max_joules_per_token: MaxJoules = None,
    rate_search: RateSearch = False,
    run_dir: Annotated[
        Path | None, typer.Option(help="Run directory (default: runs/<time>-<engine>-...).")
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            help="Resume the study in this run directory. Other options are ignored but "
            "--trials and --time-budget, which replace its budgets (--trials alone lifts "
            "the time budget)."
        ),
    ] = None,
    profiles_dir: Annotated[Path, typer.Option(help="Where profiles are written.")] = Path(
        "profiles"
    ),
    workers: Workers = None,
    dask_scheduler: DaskScheduler = None,
    cluster: Cluster = "local",
    gpus_per_worker: GpusPerWorker = 1,
    per_gpu_model: PerGpuModel = False,
    warm_start: Annotated[
        Path | None,
        typer.Option(
            help="Start from this profile's best configurations (its best and front, run right "
            "after the baseline), mapped onto this study's space: re-tuning after a GPU change."
        ),
    ] = None,
    prior: Annotated[
        str | None,
        typer.Option(
            help="Start from the best predicted configurations: aiconfigurator (NVIDIA's "
            "performance model of vLLM; the plan extra), or a profile or recorded table of "
            "another GPU. Each trial keeps its prediction; the measurement decides."
        ),
    ] = None,
    pibo: Annotated[
        bool,
        typer.Option(
            help="With --prior: also weight gp's and rf's acquisition by the predictions (piBO), "
            "not only start from the best of them."
        ),
    ] = False,
    calibrate: Annotated[
        bool,
        typer.Option(
            help="With --prior: correct its predictions by each measured trial and choose each "
            "of its starts from the corrected ones (--no-calibrate: its best three as "
            "predicted)."
        ),
    ] = True,
    replay_time_scale: ReplayTimeScale = 0.0,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Search the engine's knobs (--optimizer, ladder by default) and write the best as a profile.

    --optimizer takes ladder, gp or rf (SMAC3), optuna-tpe, hyperopt-tpe, random or descend. With
    --slo (and the other limits), only configurations that keep every limit can be chosen;
    with several --objective, the profile keeps the Pareto front. With --workers or
    --dask-scheduler, trials run side by side on a Dask cluster's workers."""
    from tuner.entrypoints import TuneRequest
    from tuner.execution.fleet import FleetSpec
    from tuner.measure.objective import goal_options

    with user_errors():
        objectives, constraints = goal_options(
            objective, slo, max_memory_mib, max_power_w, max_joules_per_token
        )
        fleet = FleetSpec.given(workers, dask_scheduler, cluster, gpus_per_worker)
    request = TuneRequest(
        engine=engine, model=model or "", workload=workload, requests=requests,
        output_tokens=output_tokens, time_scale=time_scale, set_pairs=held(set_, concurrency),
        engine_options=engine_options(server_cmd, port, request_rate, server_dialect),
        protocol=protocol(
            repeats, run_time_limit, warmup_time_limit, max_cv, max_remeasures, sample_period
        ),
        objectives=objectives, constraints=constraints, rate_search=rate_search,
        optimizer=optimizer, trials=trials, time_budget_s=time_budget, seed=seed,
        confirm=confirm, trial_timeout_s=trial_timeout, prior=prior, pibo=pibo,
        calibrate=calibrate, warm_start=warm_start, replay_time_scale=replay_time_scale,
        run_dir=run_dir, profiles_dir=profiles_dir, per_gpu_model=per_gpu_model,
    )  # fmt: skip
    run_tune(request, fleet, resume, json_=json_, quiet=quiet)


@app.command(epilog=EXIT_CODES)
def report(
    run_dir: Annotated[Path, typer.Argument(help="A study's run directory.")],
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Where to write (default: reports/<run directory name>)."),
    ] = None,
    json_: Json = False,
) -> None:
    """Write a study's report: report.md and a self-contained report.html, with PNG plots."""
    from tuner.report.report import write_report

    with user_errors():
        written = write_report(run_dir, out_dir or Path("reports") / run_dir.resolve().name)
    if json_:
        emit_json(written.as_json())
    else:
        out.print(f"report written: {written.markdown} and {written.html}")


@app.command(epilog=EXIT_CODES)
def bench(
    engine: Engine = "hf",
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help=f"As for tune (default: {DEFAULT_MODEL}, small job)."),
    ] = None,
    workload: Workload = "humaneval",
    set_: SetKnob = None,
    requests: Requests = None,
    output_tokens: OutputTokens = None,
    time_scale: TimeScale = None,
    repeats: Repeats = 3,
    run_time_limit: RunLimit = 60.0,
    warmup_time_limit: WarmupLimit = 180.0,
    max_cv: MaxCv = 0.10,
    max_remeasures: MaxRemeasures = 2,
    sample_period: SamplePeriod = 0.05,
    trial_timeout: TrialTimeout = None,
    server_cmd: ServerCmd = None,
    port: Port = None,
    concurrency: Concurrency = None,
    request_rate: RequestRate = None,
    server_dialect: ServerDialect = None,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Measure one configuration: the engine's defaults with --set changes."""
    from tuner.entrypoints import BenchRequest

    request = BenchRequest(
        engine=engine, model=model or "", workload=workload, requests=requests,
        output_tokens=output_tokens, time_scale=time_scale, set_pairs=held(set_, concurrency),
        engine_options=engine_options(server_cmd, port, request_rate, server_dialect),
        protocol=protocol(
            repeats, run_time_limit, warmup_time_limit, max_cv, max_remeasures, sample_period
        ),
        trial_timeout_s=trial_timeout,
    )  # fmt: skip
    run_bench(request, json_=json_, quiet=quiet)


@app.command(
    epilog="Exit codes: 0 throughput held (or, with --update, the new profile was written); "
    "1 no configuration "
    "ran to the end; 2 bad input (the config, a missing or mismatched profile, another workload "
    "shape); 3 throughput fell below the profile by more than the tolerance, or its limits "
    "(an SLO) broke; 130 interrupted."
)
def ci(
    config: Annotated[
        Path, typer.Option("--config", "-c", help="The CI config file (YAML or JSON).")
    ] = Path("tuner-ci.yaml"),
    update: Annotated[
        bool, typer.Option("--update", help="Write the new profile (overrides the config).")
    ] = False,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Hold a committed profile in CI: bounded bench or tune, compare, summary and JUnit XML.

    Fails (exit 3) when throughput falls below the profile by more than the tolerance.
    """
    from tuner.ci import HEADLINE, load_config, outcome_json, run_ci
    from tuner.execution.executor import NullObserver
    from tuner.report.terminal import StudyView

    quiet = quiet or json_
    with user_errors():
        cfg = load_config(config)
        if update:
            cfg = cfg.model_copy(update={"update_profile": True})
        if quiet:
            outcome = run_ci(cfg, NullObserver())
        else:
            err.print(
                f"[bold]tuner ci[/] · {cfg.job} · {cfg.engine} · {cfg.model} · {cfg.workload}"
            )
            with StudyView(err, 1 if cfg.job == "bench" else cfg.trials + 2) as view:
                outcome = run_ci(cfg, view)
    if outcome.traffic_warning:
        err.print(f"[yellow]warning:[/] {escape(outcome.traffic_warning)}", soft_wrap=True)
    if json_:
        emit_json(outcome_json(outcome))
    elif not quiet:
        style = "red" if outcome.failing else "yellow" if outcome.verdict == "replaced" else "green"
        out.print(f"[{style}]{HEADLINE[outcome.verdict]}[/]")
        for line in outcome.lines():
            out.print(escape(line))
        out.print(f"summary: {cfg.summary} · junit: {cfg.junit} · run dir: {outcome.run_dir}")
    raise typer.Exit(outcome.exit_code)


@app.command()
def gpus(json_: Json = False) -> None:
    """Show the GPUs (through NVML) and the CPU of this machine."""
    from dataclasses import asdict

    from tuner.hardware.machine import detect_hardware
    from tuner.report.terminal import hardware_table

    hw = detect_hardware()
    if json_:
        emit_json({**asdict(hw), "slug": hw.slug})
    else:
        out.print(hardware_table(hw))


@app.command()
def knobs(
    engine: Engine = "hf",
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Fill in bounds that depend on the model."),
    ] = None,
    workload: Annotated[
        str, typer.Option("--workload", "-w", help="The workload (it bounds batch sizes).")
    ] = "humaneval",
    json_: Json = False,
) -> None:
    """Show an engine's knobs as they stand on this machine (and model)."""
    from tuner.report.terminal import knobs_table
    from tuner.study.prepare import space_of

    with user_errors():
        space = space_of(engine, model, workload)
    if json_:
        emit_json(space.as_json())
    else:
        out.print(knobs_table(space))


@app.command()
def plan(
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="A model AIConfigurator ships a config for, or a local folder."
        ),
    ],
    gpu: Annotated[str, typer.Option(help="h100, h200, b200, a100 or l40s (or a profile slug).")],
    engine: Annotated[str, typer.Option("--engine", "-e", help="vllm-server or vllm.")] = (
        "vllm-server"
    ),
    gpus: Annotated[int, typer.Option(min=1, help="GPUs there are to spread over.")] = 1,
    workload: Workload = "synthetic",
    requests: Requests = None,
    input_tokens: Annotated[
        int | None, typer.Option(min=1, help="Prompt tokens per request (synthetic).")
    ] = None,
    output_tokens: OutputTokens = None,
    objective: Objectives = None,
    slo: Slo = None,
    precision: Annotated[
        str | None, typer.Option(help="Weights: fp8, fp4 or bf16 (default: the model's own).")
    ] = None,
    grid: Annotated[
        list[str] | None,
        typer.Option(help="A knob's values to predict over: name=v1,v2 (repeatable)."),
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(
            help="Requests/s to serve within the limits: the fewest GPUs that do, as "
            "replicas x the GPUs of one (at most --gpus each), and the configuration. The "
            "requests in flight default to 1024 (--requests)."
        ),
    ] = None,
    calibrate: Annotated[
        list[Path] | None,
        typer.Option(
            help="A recorded table measured on this GPU (repeatable): every prediction is "
            "corrected by the model's error on its points first."
        ),
    ] = None,
    top: Annotated[int, typer.Option(min=1, help="Configurations to show.")] = 10,
    profiles_dir: Annotated[Path, typer.Option(help="Where the profile is written.")] = Path(
        "profiles"
    ),
    json_: Json = False,
) -> None:
    """Predict the best vLLM configurations with no GPU (NVIDIA AIConfigurator's model) and
    write them as a profile marked predicted. Needs the plan extra."""
    from tuner.measure.objective import goal
    from tuner.predict.plan import PlanRequest, make_plan, parse_plan_grid, plan_workload
    from tuner.profiles.profile import profile_path, write_profile
    from tuner.report.terminal import plan_table

    with user_errors():
        spec = plan_workload(workload, requests, input_tokens, output_tokens, rate)
        target = goal(objective or ["output_tokens_per_s_per_gpu"], slo or [])
        made = make_plan(
            PlanRequest(
                engine, model, gpu, gpus, spec, target, precision=precision,
                given=parse_plan_grid(grid or []), rate=rate, calibrate=calibrate or [],
            )
        )  # fmt: skip
        path = write_profile(made.profile, profile_path(profiles_dir, made.profile))
    capacity = made.capacity.as_json() if made.capacity else None
    if json_:
        found = {"profile": str(path), **made.profile.model_dump(mode="json")}
        emit_json({**found, "capacity": capacity} if capacity else found)
        return
    out.print(f"[bold]{escape(made.ranking.label)}[/]")
    out.print(made.cost)
    out.print(plan_table(made.ranking.ranked, target, gpus, top))
    if made.capacity is not None:
        out.print(f"[bold]{escape(made.capacity.text([c.text for c in target.constraints]))}[/]")
    out.print(f"wrote {escape(str(path))} (predicted: a measured profile replaces it)")


@app.command()
def version() -> None:
    """Print tuner's version."""
    from tuner import __version__

    out.print(f"tuner {__version__}")


def main() -> None:
    """Entry point of the `tuner` command: SIGTERM and SIGHUP stop it as Ctrl-C does."""
    from tuner.processes import terminate_as_interrupt

    terminate_as_interrupt()
    app()
