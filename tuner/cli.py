"""The `tuner` command line: parses options and calls one library function per command.

Exit codes: 0 done; 1 the work ran but no configuration succeeded; 2 bad input (one line on
stderr); 3 a regression (`tuner ci`); 130 interrupted (finished trials are kept in the run
directory).
"""

from __future__ import annotations

import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from tuner.cli_common import Json, Quiet, emit_json, err, out, user_errors
from tuner.cli_profile import profile_app
from tuner.errors import TunerError

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

#: `tuner tune` with no --model: a tiny synthetic model answering the first 64 HumanEval prompts
#: with 16 tokens each, a few minutes on a 2-core CPU (all 164 prompts with 32 tokens took 28
#: minutes there). A real study names its model and keeps the whole workload.
DEFAULT_MODEL = "synthetic:tiny-llama"
DEFAULT_REQUESTS = 64
DEFAULT_OUTPUT_TOKENS = 16

Engine = Annotated[
    str,
    typer.Option(
        "--engine",
        "-e",
        help="hf, hf-pipeline, hf-cb (continuous batching), hf-server (transformers serve), "
        "vllm, vllm-server, openai-server (any OpenAI-compatible server started by "
        "--server-cmd), replay:TABLE.json (a recorded landscape), or module:Class.",
    ),
]
Workload = Annotated[
    str,
    typer.Option("--workload", "-w", help="humaneval, synthetic, jsonl:PATH, or a .yaml file."),
]
Requests = Annotated[
    int | None, typer.Option(min=1, help="Use the first N requests of the workload.")
]
OutputTokens = Annotated[
    int | None, typer.Option(min=1, help="Tokens generated per request (fixed length).")
]
SetKnob = Annotated[
    list[str] | None,
    typer.Option("--set", help="Hold a knob at a value: name=value (repeatable)."),
]
Repeats = Annotated[int, typer.Option(min=3, help="Timed runs per trial after the warm-up.")]
RunLimit = Annotated[
    float, typer.Option(min=0.001, help="Seconds a timed run may take before it is cut.")
]
WarmupLimit = Annotated[float, typer.Option(min=0.001, help="Seconds the warm-up may take.")]
MaxCv = Annotated[
    float, typer.Option(min=0, help="Re-measure when repeats spread more than this (cv).")
]
MaxRemeasures = Annotated[int, typer.Option(min=0, help="Extra sets of repeats at most.")]
SamplePeriod = Annotated[float, typer.Option(min=0.001, help="GPU sampling period in seconds.")]
TrialTimeout = Annotated[
    float | None,
    typer.Option(min=1, help="Hard limit on a trial, load included (default: from the limits)."),
]
ServerCmd = Annotated[
    str | None,
    typer.Option(
        help="vllm-server, openai-server: the command that serves the OpenAI API, with {model} "
        "{port} {host} {args} filled in (vllm-server's default: vLLM's api_server)."
    ),
]
Port = Annotated[int | None, typer.Option(min=1, max=65535, help="Server engines: a fixed port.")]
ServerDialect = Annotated[
    str | None,
    typer.Option(
        help="Server engines: what requests may say: vllm (token-id prompts, ignore_eos and "
        "min_tokens for exact lengths) or openai (text prompts only; openai-server's default)."
    ),
]
Concurrency = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Server engines: requests in flight at most, held (--set concurrency=N); "
        "searched when not given.",
    ),
]
Objectives = Annotated[
    list[str] | None,
    typer.Option(
        "--objective",
        help="What to optimize (repeat for a Pareto front): output_tokens_per_s (default), "
        "goodput (requests/s within every latency limit), goodput_tokens_per_s, "
        "output_tokens_per_s_per_gpu, joules_per_token, output_tokens_per_s_per_w, "
        "requests_per_s, or a latency "
        "percentile such as ttft_p99_ms.",
    ),
]
Slo = Annotated[
    list[str] | None,
    typer.Option(
        "--slo",
        help="A limit every chosen configuration keeps, metric<=value (repeatable): "
        "ttft_p99_ms<=500, itl_p99_ms<=50, e2e_p90_ms<=2000, any {ttft,itl,e2e}_"
        "{mean,p50,p90,p99}_ms; or any metric, e.g. output_tokens_per_s>=100.",
    ),
]
MaxMemory = Annotated[
    float | None, typer.Option(min=0, help="Limit on peak GPU memory (MiB, GPU telemetry).")
]
MaxPower = Annotated[
    float | None, typer.Option(min=0, help="Limit on peak GPU power (W, GPU telemetry).")
]
MaxJoules = Annotated[
    float | None,
    typer.Option(min=0, help="Limit on joules per output token (GPU telemetry)."),
]
RateSearch = Annotated[
    bool,
    typer.Option(
        "--rate-search",
        help="Server engines, with --slo: score each configuration at the highest Poisson "
        "request rate that keeps the limits, stepping down by 10% from the rate it reaches "
        "with every request sent at once (vLLM's auto-tune method).",
    ),
]
RequestRate = Annotated[
    float | None, typer.Option(min=0.001, help="Server engines: requests/s, Poisson arrivals.")
]
Workers = Annotated[
    int | None,
    typer.Option(
        min=1,
        help="Run trials side by side on a Dask cluster of N workers: on this host one per GPU "
        "(dask-cuda), or N processes on a CPU; with --cluster, N batch jobs.",
    ),
]
DaskScheduler = Annotated[
    str | None,
    typer.Option(
        help="Run trials on the running Dask cluster at tcp://HOST:PORT (workers started "
        "with --nthreads 1 --resources GPU=<their GPUs>)."
    ),
]
Cluster = Annotated[
    str,
    typer.Option(
        help="Where --workers start: local (this host), or slurm, pbs or lsf batch jobs "
        "through dask-jobqueue "
        "(configured by its jobqueue.yaml).",
    ),
]
GpusPerWorker = Annotated[
    int, typer.Option(min=1, help="GPUs each worker owns (for tensor-parallel trials).")
]
PerGpuModel = Annotated[
    bool,
    typer.Option(
        "--per-gpu-model",
        help="On a fleet of mixed GPUs: one study per GPU model, on its workers, one profile "
        "each (a model without a profile starts from another model's best).",
    ),
]
ReplayTimeScale = Annotated[
    float,
    typer.Option(
        min=0,
        help="Replays: each trial sleeps its recorded GPU-seconds times this (to try a fleet).",
    ),
]


def _model_and_sizes(
    model: str | None, requests: int | None, output_tokens: int | None, quiet: bool
) -> tuple[str, int | None, int | None]:
    if model is not None:
        return model, requests, output_tokens
    output_tokens = output_tokens or DEFAULT_OUTPUT_TOKENS
    requests = requests or DEFAULT_REQUESTS
    if not quiet:
        err.print(
            f"[dim]no --model: the embedded default job ({DEFAULT_MODEL}, {requests} requests, "
            f"{output_tokens} tokens out each)[/]"
        )
    return DEFAULT_MODEL, requests, output_tokens


def _protocol(
    repeats: int,
    run_time_limit: float,
    warmup_time_limit: float,
    max_cv: float,
    max_remeasures: int,
    sample_period: float,
) -> Any:
    from tuner.measure import Protocol

    return Protocol(
        repeats=repeats,
        run_time_limit_s=run_time_limit,
        warmup_time_limit_s=warmup_time_limit,
        max_cv=max_cv,
        max_remeasures=max_remeasures,
        sample_period_s=sample_period,
    )


def _engine_options(**given: Any) -> dict[str, Any]:
    """The engine options the user gave (only those)."""
    return {k: v for k, v in given.items() if v is not None}


def _rate_search(wanted: bool, constraints: list[str], options: dict[str, Any]) -> list[str] | None:
    """The limits a rate search keeps, when one was asked for; one line when it cannot run."""
    if not wanted:
        return None
    if not constraints:
        raise TunerError("--rate-search looks for the highest rate within a limit: give --slo")
    if options.get("request_rate") is not None:
        raise TunerError("--rate-search chooses the request rate: leave out --request-rate")
    return constraints


def _with_concurrency(set_: list[str] | None, concurrency: int | None) -> list[str]:
    """`--concurrency N` is `--set concurrency=N` (a knob of the server engines)."""
    return [*(set_ or []), *([f"concurrency={concurrency}"] if concurrency else [])]


def _optimizer(name: str, objectives: int = 1) -> Any:
    from tuner.optimizers import check_available

    check_available(name, objectives)
    return name


def _goal(
    objectives: list[str] | None,
    slo: list[str] | None,
    max_memory_mib: float | None,
    max_power_w: float | None,
    max_joules_per_token: float | None,
) -> tuple[list[str], list[str]]:
    """The objectives and constraints as the study spec keeps them, checked (one line)."""
    from tuner.objective import goal

    limits = {
        "peak_memory_mib": max_memory_mib,
        "peak_power_w": max_power_w,
        "joules_per_token": max_joules_per_token,
    }
    constraints = [*(slo or []), *(f"{n}<={v:g}" for n, v in limits.items() if v is not None)]
    names = objectives or ["output_tokens_per_s"]
    parsed = goal(names, constraints)
    return names, [c.text for c in parsed.constraints]


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
            help="gp (SMAC BlackBoxFacade), rf (SMAC HyperparameterOptimizationFacade), random, "
            "optuna-tpe (Optuna's TPE) or hyperopt-tpe (Hyperopt's TPE)."
        ),
    ] = "gp",
    requests: Requests = None,
    output_tokens: OutputTokens = None,
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
    replay_time_scale: ReplayTimeScale = 0.0,
    json_: Json = False,
    quiet: Quiet = False,
) -> None:
    """Search the engine's knobs with SMAC3 and write the best configuration as a profile.

    With --slo (and the other limits), only configurations that keep every limit can be chosen;
    with several --objective, the profile keeps the Pareto front. With --workers or
    --dask-scheduler, trials run side by side on a Dask cluster's workers."""
    from tuner.cli_study import fleet_spec, maybe_fleet, run_studies
    from tuner.files import check_writable
    from tuner.rundir import read_spec
    from tuner.study import Study

    quiet = quiet or json_
    with user_errors():
        check_writable(profiles_dir, "profiles folder")
        fleet_given = fleet_spec(workers, dask_scheduler, cluster, gpus_per_worker)
        if resume is not None:
            stored = read_spec(resume)
            with maybe_fleet(fleet_given or stored.fleet) as fleet:
                machine = None
                if fleet is not None:
                    machine = fleet.group(stored.gpu_model, _modules(stored.engine)).machine
                study = Study.resume(
                    resume, trials=trials, time_budget_s=time_budget, machine=machine
                )
                run_studies([study], profiles_dir, fleet=fleet, json_=json_, quiet=quiet)
            return
        with maybe_fleet(fleet_given) as fleet:
            studies = _new_studies(
                fleet,
                per_gpu_model,
                profiles_dir,
                engine=engine,
                model=model,
                workload=workload,
                trials=trials,
                time_budget=time_budget,
                seed=seed,
                confirm=confirm,
                optimizer=optimizer,
                requests=requests,
                output_tokens=output_tokens,
                set_=set_,
                protocol=_protocol(
                    repeats,
                    run_time_limit,
                    warmup_time_limit,
                    max_cv,
                    max_remeasures,
                    sample_period,
                ),
                trial_timeout=trial_timeout,
                options=_engine_options(
                    server_cmd=server_cmd,
                    port=port,
                    request_rate=request_rate,
                    dialect=server_dialect,
                ),
                concurrency=concurrency,
                goal=_goal(objective, slo, max_memory_mib, max_power_w, max_joules_per_token),
                rate_search=rate_search,
                run_dir=run_dir,
                replay_time_scale=replay_time_scale,
                quiet=quiet,
                warm_from=warm_start,
                prior=prior,
                pibo=pibo,
            )
            run_studies(studies, profiles_dir, fleet=fleet, json_=json_, quiet=quiet)


def _modules(engine: str) -> list[str]:
    from tuner.setup import catalogue_of

    return sorted(catalogue_of(engine).modules())


def _new_studies(
    fleet: Any,
    per_gpu_model: bool,
    profiles_dir: Path,
    *,
    engine: str,
    model: str | None,
    workload: str,
    trials: int | None,
    time_budget: float | None,
    seed: int,
    confirm: int,
    optimizer: str,
    requests: int | None,
    output_tokens: int | None,
    set_: list[str] | None,
    protocol: Any,
    trial_timeout: float | None,
    options: dict[str, Any],
    concurrency: int | None,
    goal: tuple[list[str], list[str]],
    rate_search: bool,
    run_dir: Path | None,
    replay_time_scale: float,
    quiet: bool,
    warm_from: Path | None = None,
    prior: str | None = None,
    pibo: bool = False,
) -> list[Any]:
    """The new studies of one `tuner tune`: one, or one per GPU model of the fleet (each in a
    run directory of its own, warm-started from another model's profile where it has none)."""
    from tuner.prior import load_prior, prior_plan
    from tuner.replay import is_replay
    from tuner.rundir import StudySpec, run_dir_for
    from tuner.setup import prepare
    from tuner.study import Study, warm_start, warm_start_from
    from tuner.workloads import load_workload

    if per_gpu_model and fleet is None:
        raise TunerError("--per-gpu-model splits a fleet: give --workers or --dask-scheduler")
    if per_gpu_model and warm_from is not None:
        raise TunerError("--warm-start is for one study; --per-gpu-model warm-starts each itself")
    if replay_time_scale and not is_replay(engine):
        raise TunerError("--replay-time-scale is for replays (--engine replay:TABLE)")
    if pibo and prior is None:
        raise TunerError("--pibo weights the search by a prior: give --prior too")
    if trials is None and time_budget is None:
        trials = 12
    objectives, constraints = goal
    if is_replay(engine):
        if model is not None:
            raise TunerError("a replay takes its model and workload from the table")
        spec_workload: Any = workload
    else:
        model, requests, output_tokens = _model_and_sizes(model, requests, output_tokens, quiet)
        spec_workload = load_workload(workload, requests=requests, output_tokens=output_tokens)
    groups: list[Any] = [None]
    if fleet is not None:
        modules = _modules(engine)
        groups = fleet.groups(modules) if per_gpu_model else [fleet.group(None, modules)]
    studies = []
    for group in groups:
        # Parse --set against the catalogue before anything slow happens.
        setup = prepare(
            engine,
            model or "",
            spec_workload,
            set_pairs=_with_concurrency(set_, concurrency),
            options=options,
            machine=group.machine if group is not None else None,
        )
        spec = StudySpec(
            engine=engine,
            model=setup.model.ref,
            workload=setup.workload,
            trials=trials,
            time_budget_s=time_budget,
            seed=seed,
            confirm=confirm,
            optimizer=_optimizer(optimizer, len(objectives)),
            objectives=objectives,
            constraints=constraints,
            protocol=protocol.model_copy(
                update={"rate_search": _rate_search(rate_search, constraints, options)}
            ),
            pinned=setup.space.pinned,
            engine_options=options,
            trial_timeout_s=trial_timeout,
            fleet=fleet.spec if fleet is not None else None,
            gpu_model=group.gpu_model if per_gpu_model else None,
            replay_time_scale=replay_time_scale,
        )
        if per_gpu_model:
            spec = warm_start(spec, setup, profiles_dir)
        elif warm_from is not None:
            spec = warm_start_from(spec, setup, warm_from)
        say = lambda line: err.print(escape(line))  # noqa: E731
        predictor = load_prior(prior, setup, say) if prior is not None else None
        if predictor is not None:
            ranked = prior_plan(predictor, setup, spec.goal(), say)
            spec = spec.model_copy(update={"prior": ranked, "pibo": pibo})
        where = run_dir or run_dir_for(
            Path("runs"), setup.catalogue.engine, setup.model.slug, setup.workload.slug
        )
        if per_gpu_model:
            where = where.with_name(f"{where.name}--{group.slug}")
        study = Study.create(spec, where, setup)
        study.speed_of_light = getattr(predictor, "with_speed_of_light", None)
        studies.append(study)
    return studies


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
    from tuner.report import write_report

    with user_errors():
        written = write_report(run_dir, out_dir or Path("reports") / run_dir.resolve().name)
    if json_:
        emit_json(
            {
                "markdown": str(written.markdown),
                "html": str(written.html),
                "images": [str(p) for p in written.images],
            }
        )
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
    from tuner.cli_study import say_no_telemetry
    from tuner.console import StudyView, measurement_table
    from tuner.executor import NullObserver
    from tuner.executor import bench as run_bench
    from tuner.objective import THROUGHPUT
    from tuner.replay import is_replay
    from tuner.rundir import StudySpec
    from tuner.setup import prepare
    from tuner.workloads import load_workload

    quiet = quiet or json_
    with user_errors():
        if is_replay(engine):
            raise TunerError("a replay answers studies only (tuner tune); bench runs an engine")
        model, requests, output_tokens = _model_and_sizes(model, requests, output_tokens, quiet)
        spec_workload = load_workload(workload, requests=requests, output_tokens=output_tokens)
        options = _engine_options(
            server_cmd=server_cmd, port=port, request_rate=request_rate, dialect=server_dialect
        )
        setup = prepare(engine, model, spec_workload, options=options)
        knobs = setup.space.complete(
            setup.space.parse_overrides(_with_concurrency(set_, concurrency))
        )
        protocol = _protocol(
            repeats, run_time_limit, warmup_time_limit, max_cv, max_remeasures, sample_period
        )
        timeout = StudySpec(
            engine=engine,
            model=model,
            workload=spec_workload,
            protocol=protocol,
            trial_timeout_s=trial_timeout,
        ).timeout_s()
        make_task = partial(setup.task, protocol=protocol)
    if not quiet:
        say_no_telemetry(setup.hardware)
    log_dir = Path(tempfile.mkdtemp(prefix="tuner-bench-"))
    try:
        if quiet:
            result = run_bench(make_task, knobs, timeout, log_dir, NullObserver())
        else:
            with StudyView(err, 1) as view:
                result = run_bench(make_task, knobs, timeout, log_dir, view)
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
    from tuner.console import StudyView
    from tuner.executor import NullObserver

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
    if json_:
        emit_json(outcome_json(outcome))
    elif not quiet:
        style = {
            "failed": "red",
            "regression": "red",
            "slo breach": "red",
            "replaced": "yellow",
        }.get(outcome.verdict, "green")
        out.print(f"[{style}]{HEADLINE[outcome.verdict]}[/]")
        for breach in outcome.breaches:
            out.print(f"  {escape(breach)}")
        if outcome.ratio is not None:
            out.print(
                f"{outcome.measured:,.1f} {outcome.label}, {outcome.ratio:.3f} of the profile's "
                f"{outcome.held_rate:,.1f} (tolerance {outcome.tolerance:.0%})"
            )
        if outcome.written is not None:
            out.print(f"profile written: {outcome.written}")
        out.print(f"summary: {cfg.summary} · junit: {cfg.junit} · run dir: {outcome.run_dir}")
    raise typer.Exit(outcome.exit_code)


@app.command()
def gpus(json_: Json = False) -> None:
    """Show the GPUs (through NVML) and the CPU of this machine."""
    from dataclasses import asdict

    from tuner.console import hardware_table
    from tuner.hardware import detect_hardware

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
    from tuner.console import knobs_table
    from tuner.hardware import detect_platform
    from tuner.setup import catalogue_of, prepare
    from tuner.space import resolve
    from tuner.workloads import load_workload, request_count

    with user_errors():
        if model is not None:
            space = prepare(engine, model, workload).space
        else:
            catalogue = catalogue_of(engine)
            # Without a model, the workload still bounds batch sizes (its request count).
            facts = {"workload_requests": request_count(load_workload(workload))}
            space = resolve(catalogue, detect_platform(catalogue.modules()), facts=facts)
    if json_:
        emit_json(
            {
                "engine": space.engine,
                "searched": {n: k.describe_values() for n, k in space.knobs.items()},
                "fixed": space.fixed,
                "unavailable": space.dropped,
                "defaults": space.default_knobs(),
            }
        )
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
    top: Annotated[int, typer.Option(min=1, help="Configurations to show.")] = 10,
    profiles_dir: Annotated[Path, typer.Option(help="Where the profile is written.")] = Path(
        "profiles"
    ),
    json_: Json = False,
) -> None:
    """Predict the best vLLM configurations with no GPU (NVIDIA AIConfigurator's model) and
    write them as a profile marked predicted. Needs the plan extra."""
    from tuner.console import plan_table
    from tuner.objective import goal
    from tuner.plan import make_plan, parse_plan_grid
    from tuner.profiles import profile_path, write_profile
    from tuner.workloads import load_workload

    with user_errors():
        spec = load_workload(workload, requests=requests, output_tokens=output_tokens)
        if input_tokens is not None:
            spec = spec.model_copy(update={"input_tokens": input_tokens})
        target = goal(objective or ["output_tokens_per_s_per_gpu"], slo or [])
        made = make_plan(
            engine, model, gpu, gpus, spec, target, precision=precision,
            given=parse_plan_grid(grid or []),
        )  # fmt: skip
        path = write_profile(made.profile, profile_path(profiles_dir, made.profile))
    if json_:
        emit_json({"profile": str(path), **made.profile.model_dump(mode="json")})
        return
    out.print(f"[bold]{escape(made.ranking.label)}[/]")
    out.print(plan_table(made.ranking.ranked, target, gpus, top))
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
