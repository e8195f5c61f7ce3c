"""The options `tune`, `bench` and `plan` share, and what the commands make of the groups of
them that the library takes whole: the knobs held, the server engines' options and the
measurement protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from tuner.measure.measurement import MeasurementProtocol

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


def held(set_: list[str] | None, concurrency: int | None) -> list[str]:
    """The knobs held at a value: `--set`, and `--concurrency N` as `--set concurrency=N` (a
    knob of the server engines)."""
    return [*(set_ or []), *([f"concurrency={concurrency}"] if concurrency else [])]


def engine_options(
    server_cmd: str | None, port: int | None, request_rate: float | None, dialect: str | None
) -> dict[str, str | int | float]:
    """The server engines' options the user gave (only those)."""
    given = {"server_cmd": server_cmd, "port": port, "request_rate": request_rate}
    return {k: v for k, v in {**given, "dialect": dialect}.items() if v is not None}


def protocol(
    repeats: int,
    run_time_limit: float,
    warmup_time_limit: float,
    max_cv: float,
    max_remeasures: int,
    sample_period: float,
) -> MeasurementProtocol:
    """How each trial is measured."""
    from tuner.measure.measurement import MeasurementProtocol

    return MeasurementProtocol(
        repeats=repeats,
        run_time_limit_s=run_time_limit,
        warmup_time_limit_s=warmup_time_limit,
        max_cv=max_cv,
        max_remeasures=max_remeasures,
        sample_period_s=sample_period,
    )
