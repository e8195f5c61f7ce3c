"""The options `tune`, `bench` and `plan` share, and the argument objects the commands build
from them: the job (engine, model, workload), the measurement protocol, the server engines'
options, the goal, the fleet and the search. Each group checks itself and turns into what the
library takes (a `MeasurementProtocol`, engine options, objectives and constraints, a
`FleetSpec`)."""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Self

import typer

from tuner.cli.common import err
from tuner.errors import TunerError

if TYPE_CHECKING:
    from tuner.execution.fleet import FleetSpec
    from tuner.measure.measurement import MeasurementProtocol

#: `tuner tune` with no --model: a tiny synthetic model answering the first 64 HumanEval prompts
#: with 16 tokens each: minutes on a 2-core CPU, where the whole workload takes many times as
#: long. A real study names its model and keeps the whole workload.
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
    typer.Option(
        "--workload",
        "-w",
        help="humaneval, synthetic, shared-prefix, jsonl:PATH, sharegpt:PATH, chat:PATH "
        "(OpenAI chat requests, JSON lines), trace:PATH (CSV or JSON lines), or a .yaml file.",
    ),
]
Requests = Annotated[
    int | None, typer.Option(min=1, help="Use the first N requests of the workload.")
]
OutputTokens = Annotated[
    int | None, typer.Option(min=1, help="Tokens generated per request (fixed length).")
]
TimeScale = Annotated[
    float | None,
    typer.Option(
        min=0.0001, help="A trace's arrival times multiplied by this (0.5: twice as fast)."
    ),
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


@dataclass(frozen=True)
class JobArgs:
    """What runs: the engine, the model, the workload, and knobs held at a value (`--set`)."""

    engine: str
    model: str | None
    workload: str
    requests: int | None
    output_tokens: int | None
    time_scale: float | None
    set_: list[str] | None

    def sized(self, quiet: bool) -> tuple[str, int | None, int | None]:
        """The model, request count and output length; with no --model, the embedded default
        job (said on stderr unless `quiet`)."""
        if self.model is not None:
            return self.model, self.requests, self.output_tokens
        output_tokens = self.output_tokens or DEFAULT_OUTPUT_TOKENS
        requests = self.requests or DEFAULT_REQUESTS
        if not quiet:
            err.print(
                f"[dim]no --model: the embedded default job ({DEFAULT_MODEL}, {requests} "
                f"requests, {output_tokens} tokens out each)[/]"
            )
        return DEFAULT_MODEL, requests, output_tokens


@dataclass(frozen=True)
class MeasureArgs:
    """How each trial is measured."""

    repeats: int
    run_time_limit: float
    warmup_time_limit: float
    max_cv: float
    max_remeasures: int
    sample_period: float
    trial_timeout: float | None

    def protocol(self) -> MeasurementProtocol:
        from tuner.measure.measurement import MeasurementProtocol

        return MeasurementProtocol(
            repeats=self.repeats,
            run_time_limit_s=self.run_time_limit,
            warmup_time_limit_s=self.warmup_time_limit,
            max_cv=self.max_cv,
            max_remeasures=self.max_remeasures,
            sample_period_s=self.sample_period,
        )


@dataclass(frozen=True)
class ServerArgs:
    """The server engines' options."""

    server_cmd: str | None
    port: int | None
    concurrency: int | None
    request_rate: float | None
    server_dialect: str | None

    def options(self) -> dict[str, Any]:
        """The engine options the user gave (only those)."""
        given = {
            "server_cmd": self.server_cmd,
            "port": self.port,
            "request_rate": self.request_rate,
            "dialect": self.server_dialect,
        }
        return {k: v for k, v in given.items() if v is not None}

    def set_pairs(self, set_: list[str] | None) -> list[str]:
        """`--concurrency N` is `--set concurrency=N` (a knob of the server engines)."""
        held = [f"concurrency={self.concurrency}"] if self.concurrency else []
        return [*(set_ or []), *held]


@dataclass(frozen=True)
class GoalArgs:
    """What a study optimizes and the limits it keeps."""

    objective: list[str] | None
    slo: list[str] | None
    max_memory_mib: float | None
    max_power_w: float | None
    max_joules_per_token: float | None
    rate_search: bool

    def resolve(self) -> tuple[list[str], list[str]]:
        """The objectives and constraints as the study spec keeps them, checked (one line)."""
        from tuner.measure.objective import goal

        limits = {
            "peak_memory_mib": self.max_memory_mib,
            "peak_power_w": self.max_power_w,
            "joules_per_token": self.max_joules_per_token,
        }
        constraints = [
            *(self.slo or []),
            *(f"{n}<={v:g}" for n, v in limits.items() if v is not None),
        ]
        names = self.objective or ["output_tokens_per_s"]
        parsed = goal(names, constraints)
        return names, [c.text for c in parsed.constraints]

    def rate_limits(self, constraints: list[str], options: dict[str, Any]) -> list[str] | None:
        """The limits a rate search keeps, when one was asked for; one line when it cannot
        run."""
        if not self.rate_search:
            return None
        if not constraints:
            raise TunerError("--rate-search looks for the highest rate within a limit: give --slo")
        if options.get("request_rate") is not None:
            raise TunerError("--rate-search chooses the request rate: leave out --request-rate")
        return constraints


@dataclass(frozen=True)
class FleetArgs:
    """Where trials run side by side: a Dask fleet, or none."""

    workers: int | None
    dask_scheduler: str | None
    cluster: str
    gpus_per_worker: int
    per_gpu_model: bool

    def spec(self) -> FleetSpec | None:
        """The fleet the options name, or None for trials one at a time on this machine."""
        from tuner.execution.fleet import CLUSTERS, FleetSpec

        workers, scheduler, cluster = self.workers, self.dask_scheduler, self.cluster
        if cluster not in CLUSTERS:
            raise TunerError(f"--cluster takes {', '.join(CLUSTERS)}, not {cluster!r}")
        if scheduler and (workers or cluster != "local"):
            raise TunerError(
                "--dask-scheduler uses a running cluster: leave out --workers/--cluster"
            )
        if cluster != "local" and not workers:
            raise TunerError(
                f"--cluster {cluster} submits worker jobs: say how many with --workers"
            )
        if not (workers or scheduler):
            if self.gpus_per_worker != 1:
                raise TunerError("--gpus-per-worker goes with --workers or --cluster")
            return None
        return FleetSpec(
            cluster=cluster,  # type: ignore[arg-type]
            workers=workers,
            scheduler=scheduler,
            gpus_per_worker=self.gpus_per_worker,
        )


@dataclass(frozen=True)
class SearchArgs:
    """How a study searches: its budget, seed, optimizer, run directory and starting points."""

    trials: int | None
    time_budget: float | None
    seed: int
    confirm: int
    optimizer: str
    run_dir: Path | None
    warm_start: Path | None
    prior: str | None
    pibo: bool
    calibrate: bool
    replay_time_scale: float


class _Command:
    """A command's arguments, grouped: `of(**options)` takes the command's options by name."""

    @classmethod
    def of(cls, **options: Any) -> Self:
        """The arguments of a command whose options are named as the groups' fields."""
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        used: set[str] = set()
        for f in fields(cls):  # type: ignore[arg-type]
            kind = hints[f.name]
            if is_dataclass(kind):
                names = [g.name for g in fields(kind)]
                values[f.name] = kind(**{n: options[n] for n in names})  # type: ignore[operator]
                used.update(names)
            else:
                values[f.name] = options[f.name]
                used.add(f.name)
        assert used == set(options), f"options no group takes: {set(options) - used}"
        return cls(**values)


@dataclass(frozen=True)
class TuneArgs(_Command):
    """Everything `tuner tune` was given."""

    job: JobArgs
    measure: MeasureArgs
    server: ServerArgs
    goal: GoalArgs
    fleet: FleetArgs
    search: SearchArgs
    profiles_dir: Path
    resume: Path | None
    json_: bool
    quiet: bool


@dataclass(frozen=True)
class BenchArgs(_Command):
    """Everything `tuner bench` was given."""

    job: JobArgs
    measure: MeasureArgs
    server: ServerArgs
    json_: bool
    quiet: bool
