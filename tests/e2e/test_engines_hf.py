"""The transformers engines, for real, on the synthetic tiny Llama (CPU here, GPU if any)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jsonschema
import pytest
import torch
from typer.testing import CliRunner

from tuner.cli.app import app
from tuner.engines import engine_class
from tuner.engines.hf import count_new_tokens
from tuner.profiles.profile import SCHEMA_FILE
from tuner.specs.workloads import Tokenizer, build_requests, load_workload

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def requests(tiny_model: Path):  # type: ignore[no-untyped-def]
    spec = load_workload("humaneval", requests=6, output_tokens=5)
    return build_requests(spec, Tokenizer(tiny_model))


def run(engine, requests, knobs, limit_s=120.0):  # type: ignore[no-untyped-def]
    prepared = engine.prepare(requests, knobs)
    return engine.run(prepared, time.perf_counter() + limit_s)


@pytest.mark.parametrize(
    "load",
    [
        {"dtype": "float32", "attn_implementation": "sdpa"},
        {"dtype": "bfloat16", "attn_implementation": "eager"},
    ],
)
def test_generate_engine_counts_every_requested_token(tiny_model: Path, requests, load) -> None:  # type: ignore[no-untyped-def]
    engine = engine_class("hf")(tiny_model, load)
    try:
        for batch_size, cache in ((1, "dynamic"), (4, "static"), (16, "dynamic")):
            out = run(engine, requests, {"batch_size": batch_size, "cache_implementation": cache})
            assert out.requests == len(requests)
            assert out.output_tokens == 5 * len(requests)
            assert out.input_tokens == sum(len(r.prompt_token_ids) for r in requests)
    finally:
        engine.close()


def test_generate_engine_stops_at_the_deadline(tiny_model: Path) -> None:
    spec = load_workload("humaneval", requests=40, output_tokens=200)
    many = build_requests(spec, Tokenizer(tiny_model))
    engine = engine_class("hf")(tiny_model, {"dtype": "float32"})
    try:
        start = time.perf_counter()
        out = run(engine, many, {"batch_size": 1}, limit_s=0.5)
        assert time.perf_counter() - start < 10
        assert out.requests < len(many) and out.output_tokens < 200 * len(many)
    finally:
        engine.close()


def test_pipeline_engine_counts_every_requested_token(tiny_model: Path, requests) -> None:  # type: ignore[no-untyped-def]
    engine = engine_class("hf-pipeline")(tiny_model, {"dtype": "float32"})
    try:
        for batch_size in (1, 4):
            out = run(engine, requests, {"batch_size": batch_size})
            assert out.requests == len(requests)
            assert out.output_tokens == 5 * len(requests)
            assert out.input_tokens == sum(len(r.prompt_token_ids) for r in requests)
    finally:
        engine.close()


def test_count_new_tokens_stops_at_the_first_eos() -> None:
    new = torch.tensor([[5, 6, 7, 8], [5, 1, 2, 2], [1, 2, 2, 2]])
    assert count_new_tokens(new, torch.tensor([1])).tolist() == [4, 2, 1]
    assert count_new_tokens(new, torch.tensor([], dtype=torch.long)).tolist() == [4, 4, 4]


@pytest.mark.parametrize("engine", ["hf", "hf-pipeline"])
def test_tune_on_the_real_engine_writes_a_valid_profile(tmp_path: Path, engine: str) -> None:
    """The embedded default (no --model), shrunk to a few trials and requests."""
    result = CliRunner().invoke(
        app,
        [
            "tune",
            "--engine",
            engine,
            "--trials",
            "4",
            "--requests",
            "6",
            "--output-tokens",
            "6",
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
    assert profile["model"]["ref"] == "synthetic:tiny-llama"
    assert profile["engine"]["versions"]["transformers"]
    # The speed-up is the pick's confirmed figure over the baseline's. Whether it exceeds 1 on
    # six requests of six tokens is noise on a loaded 2-core machine (seen at 0.86 and 0.97
    # within the whole suite): a timing, not a behaviour, so it is not asserted.
    best = profile["best"]["measurement"]["output_tokens_per_s"]["median"]
    base = profile["baseline"]["measurement"]["output_tokens_per_s"]["median"]
    assert profile["speedup"] == pytest.approx(best / base, rel=1e-3)
    assert profile["best"]["number"] in [
        t["number"] for t in data["trials"] if t["origin"] == "confirm"
    ]
    assert [t["status"] for t in data["trials"]].count("ok") >= 2


@pytest.mark.gpu
def test_generate_engine_on_the_gpu(tiny_model: Path, requests) -> None:  # type: ignore[no-untyped-def]
    engine = engine_class("hf")(
        tiny_model, {"dtype": "bfloat16", "num_gpus": 1, "torch_compile": False}
    )
    try:
        assert engine.model.device.type == "cuda"
        out = run(engine, requests, {"batch_size": 4, "cache_implementation": "static"})
        assert out.output_tokens == 5 * len(requests)
    finally:
        engine.close()
