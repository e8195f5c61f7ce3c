"""A server's own metrics (`tuner.engines.metrics`): Prometheus text parsed by prometheus_client,
the figures of a run from the scrapes around it, and the stub server's `/metrics` end to end."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tuner.engines.metrics import (
    HITS,
    PREEMPTIONS,
    QUERIES,
    QUEUE_COUNT,
    QUEUE_SUM,
    parse,
    run_metrics,
)
from tuner.fmt import fmt_engine_metrics

ROOT = REPO_ROOT
VLLM_TEXT = """# HELP vllm:prefix_cache_queries_total Prefix cache queries, in queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1000.0
vllm:prefix_cache_queries_total{engine="1",model_name="m"} 600.0
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="m"} 400.0
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="m"} 2.0
# HELP vllm:request_queue_time_seconds Histogram of time spent in WAITING phase for request.
# TYPE vllm:request_queue_time_seconds histogram
vllm:request_queue_time_seconds_bucket{engine="0",le="+Inf",model_name="m"} 8.0
vllm:request_queue_time_seconds_count{engine="0",model_name="m"} 8.0
vllm:request_queue_time_seconds_sum{engine="0",model_name="m"} 0.4
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="m"} 3.0
"""


def test_the_watched_counters_are_summed_over_engines_and_the_rest_ignored() -> None:
    found = parse(VLLM_TEXT)
    assert found == {
        HITS: 400.0,
        QUERIES: 1600.0,
        PREEMPTIONS: 2.0,
        QUEUE_COUNT: 8.0,
        QUEUE_SUM: 0.4,
    }
    assert parse("this is { not prometheus") == {}


def test_a_runs_figures_are_the_deltas_of_the_scrapes_around_it() -> None:
    before = parse(VLLM_TEXT)
    after = {HITS: 1200.0, QUERIES: 2600.0, PREEMPTIONS: 5.0, QUEUE_COUNT: 18.0, QUEUE_SUM: 1.4}
    found = run_metrics(before, after)
    assert found == {"prefix_cache_hit_rate": 0.8, "preemptions": 3.0, "queue_time_mean_ms": 100.0}
    assert fmt_engine_metrics(found) == "prefix cache 80% · 3 preempted · queued 100.0 ms"
    assert run_metrics(None, after) is None and run_metrics(before, None) is None
    # A server that exposes none of them (its /metrics is someone else's) gives no figures.
    assert run_metrics({}, {}) is None
    # No prompt looked up in the run: no hit rate, rather than a division by zero.
    assert "prefix_cache_hit_rate" not in (run_metrics(before, before) or {})


def bench(workload: str, metrics: bool, dialect: str = "openai") -> dict:  # type: ignore[type-arg]
    command = "{python} -m tuner.testing --port {port}" + (" --metrics" if metrics else "")
    args = [
        *(
            "bench",
            "--engine",
            "openai-server",
            "--server-cmd",
            command,
            "--server-dialect",
            dialect,
        ),
        *("--model", "synthetic:tiny-llama", "--workload", workload, "--requests", "8"),
        *("--output-tokens", "4", "--run-time-limit", "20", "--warmup-time-limit", "20"),
        *("--max-remeasures", "0", "--json"),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "tuner", *args], cwd=ROOT, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["measurement"]


@pytest.mark.parametrize("workload", ["shared-prefix", "synthetic"])
def test_each_run_keeps_the_servers_own_figures_where_it_has_metrics(workload: str) -> None:
    measured = bench(workload, metrics=True)
    for run in measured["runs"]:
        found = run["engine_metrics"]
        assert set(found) == {"prefix_cache_hit_rate", "preemptions", "queue_time_mean_ms"}
        assert found["preemptions"] == 0 and found["queue_time_mean_ms"] == 0
        # The warm-up sent every prompt once already: without a cache salt, the stub's cache
        # holds them all, as a real prefix cache would.
        assert found["prefix_cache_hit_rate"] == 1.0
    assert measured["cold"]["engine_metrics"]["prefix_cache_hit_rate"] < 1.0
    if workload == "shared-prefix":  # 8 requests over 4 prefixes: half find theirs cached
        assert measured["cold"]["engine_metrics"]["prefix_cache_hit_rate"] > 0.3
    else:
        assert measured["cold"]["engine_metrics"]["prefix_cache_hit_rate"] < 0.1


@pytest.mark.parametrize("workload", ["shared-prefix", "synthetic"])
def test_with_vllms_cache_salt_no_run_finds_the_run_before_it_cached(workload: str) -> None:
    measured = bench(workload, metrics=True, dialect="vllm")
    cold = measured["cold"]["engine_metrics"]["prefix_cache_hit_rate"]
    hit_rates = [run["engine_metrics"]["prefix_cache_hit_rate"] for run in measured["runs"]]
    # Each run its own salt: every run sees what its own requests share, as the first did.
    assert hit_rates == [cold] * len(hit_rates)
    assert (cold > 0.3) if workload == "shared-prefix" else (cold < 0.1)


def test_a_server_without_metrics_is_measured_as_before() -> None:
    measured = bench("synthetic", metrics=False)
    assert all(run["engine_metrics"] is None for run in [measured["cold"], *measured["runs"]])
