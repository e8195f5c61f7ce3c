"""Hugging Face continuous batching, for real on the synthetic tiny Llama: `hf-cb`
(`generate_batch`'s manager) and `hf-server` (`transformers serve --continuous-batching`)."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuner.cli.app import app
from tuner.engines import load_catalogue
from tuner.engines.hf_cb import ContinuousBatchingEngine, check_catalogue, library_offers
from tuner.engines.openai_client import TRANSFORMERS, LoadClient, _Result
from tuner.hardware.machine import detect_platform
from tuner.measure.objective import metric
from tuner.profiles.profile import read_profile
from tuner.specs.space import resolve
from tuner.specs.workloads import Tokenizer, build_requests, load_workload


@pytest.fixture(scope="module")
def requests(tiny_model: Path):  # type: ignore[no-untyped-def]
    spec = load_workload("humaneval", requests=6, output_tokens=5)
    built = build_requests(spec, Tokenizer(tiny_model))
    # Requests of different lengths: each must get exactly its own count.
    return [dataclasses.replace(r, output_tokens=3 + i % 3) for i, r in enumerate(built)]


def test_the_catalogue_is_checked_against_the_installed_transformers() -> None:
    version, fields, schedulers, attention = library_offers()
    assert version
    assert {"page_size", "num_blocks", "max_batch_tokens", "scheduler_type"} <= fields
    assert "fifo" in schedulers and "sdpa" in attention
    older = check_catalogue(
        load_catalogue("hf-cb"), "0.1", fields - {"page_size"}, {"fifo"}, attention
    )
    reason = "transformers 0.1 has no ContinuousBatchingConfig.page_size"
    assert older.knobs["page_size"].unavailable == reason
    assert [c.value for c in older.knobs["scheduler_type"].choice_specs()] == ["fifo"]
    space = resolve(older, detect_platform(older.modules()), facts={"workload_requests": 8})
    assert space.dropped["page_size"] == reason
    assert "num_blocks" in space.knobs


def test_tuner_knobs_lists_the_hf_cb_knobs_of_this_transformers() -> None:
    result = CliRunner().invoke(app, ["knobs", "--engine", "hf-cb", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert {"page_size", "num_blocks", "max_batch_tokens", "scheduler_type"} <= set(
        data["searched"]
    )
    assert data["unavailable"]["use_cuda_graph"] == "needs cuda"  # this machine has no GPU


def test_the_transformers_dialect_sends_text_and_fails_a_short_answer(requests) -> None:  # type: ignore[no-untyped-def]
    client = LoadClient("http://127.0.0.1:1", "m", TRANSFORMERS)
    body = client.prepare(requests[:1]).bodies[0]
    assert isinstance(body["prompt"], str)
    assert "ignore_eos" not in body and "min_tokens" not in body  # transformers serve refuses them
    out = client._output(
        [
            _Result(asked=5, ttft_s=0.1, e2e_s=0.5, tokens=5, prompt_tokens=9),
            _Result(asked=5, ttft_s=0.1, e2e_s=0.3, tokens=3, prompt_tokens=9),
        ]
    )
    assert out.requests == 1 and out.output_tokens == 5 and out.failed == 1
    assert out.failures == ("asked for 5 tokens, got 3",)


@pytest.mark.slow
def test_hf_cb_generates_each_requests_count_and_times_each_request(
    tiny_model: Path,
    requests,  # type: ignore[no-untyped-def]
) -> None:
    engine = ContinuousBatchingEngine(
        tiny_model, {"dtype": "float32", "attn_implementation": "sdpa"}
    )
    try:
        for knobs in (
            {"page_size": 32, "num_blocks": 64, "max_batch_tokens": 256},
            {"page_size": 16, "num_blocks": 128, "scheduler_type": "prefill_first"},
        ):
            prepared = engine.prepare(requests, knobs)
            for _ in range(2):  # the manager is kept between runs, and leaves nothing behind
                out = engine.run(prepared, time.perf_counter() + 120)
                assert out.failed == 0, out.failures
                assert out.requests == len(requests)
                assert out.output_tokens == sum(r.output_tokens for r in requests)
                assert len(out.timings) == len(requests)
                assert all(0 < t.ttft_s <= t.e2e_s for t in out.timings)
                assert len(out.itl_s) == sum(r.output_tokens - 1 for r in requests)
        late = engine.run(prepared, time.perf_counter() - 1)
        assert late.requests < len(requests)
        again = engine.run(prepared, time.perf_counter() + 120)
        assert again.requests == len(requests)  # nothing left over from the cut run
    finally:
        engine.close()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("engine", "extra"),
    [
        ("hf-cb", ["--set", "num_blocks=128", "--trials", "4"]),
        ("hf-server", ["--set", "cb_num_blocks=128", "--trials", "3", "--concurrency", "6"]),
    ],
)
def test_tune_on_continuous_batching_writes_a_profile(
    tmp_path: Path, engine: str, extra: list[str]
) -> None:
    result = CliRunner().invoke(
        app,
        [
            *("tune", "--engine", engine, "--requests", "6", "--output-tokens", "6"),
            *("--repeats", "3", "--max-remeasures", "0", "--confirm", "1", "--json"),
            *("--run-dir", str(tmp_path / "run"), "--profiles-dir", str(tmp_path / "profiles")),
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    profile = read_profile(Path(data["profile"]))
    assert profile.engine.name == engine
    assert profile.best.measurement is not None
    assert profile.best.measurement.output_tokens_per_s.median > 0
    assert metric("ttft_p99_ms").of(profile.best.measurement)  # per-request latency recorded
    assert [t["status"] for t in data["trials"]].count("ok") >= 2
