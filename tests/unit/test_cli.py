"""The commands are thin: each turns its flags into a request to the library
(`tuner.entrypoints`) and asks for nothing else. What the library then does with a request is
tested in tests/integration/ and tests/e2e/, through the same commands."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tuner.entrypoints import BenchRequest, TuneRequest

cli = importlib.import_module("tuner.cli.app")  # the module; `tuner.cli.app` is its Typer app
runner = CliRunner()
Calls = list[tuple[tuple[Any, ...], dict[str, Any]]]


def asked(monkeypatch: pytest.MonkeyPatch, name: str) -> Calls:
    """What the command handed to `name` (`run_tune`, `run_bench`), in place of running it."""
    calls: Calls = []
    monkeypatch.setattr(cli, name, lambda *args, **kwargs: calls.append((args, kwargs)))
    return calls


def test_tune_asks_the_library_for_what_its_flags_say(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    calls = asked(monkeypatch, "run_tune")
    result = runner.invoke(
        cli.app,
        [
            *("tune", "--engine", "vllm-server", "--model", "synthetic:tiny-llama"),
            *("--workload", "synthetic", "--requests", "16", "--output-tokens", "8"),
            *("--set", "max_num_seqs=8", "--concurrency", "4", "--request-rate", "2.5"),
            *("--slo", "ttft_p99_ms<=200", "--optimizer", "gp", "--trials", "7", "--seed", "3"),
            *("--confirm", "1", "--repeats", "5", "--max-remeasures", "0", "--workers", "2"),
            *("--run-dir", str(tmp_path / "run"), "--profiles-dir", str(tmp_path / "p"), "--json"),
        ],
    )
    assert result.exit_code == 0, result.output
    [((request, fleet, resume), options)] = calls
    assert isinstance(request, TuneRequest)
    assert (request.engine, request.model, request.workload) == (
        "vllm-server",
        "synthetic:tiny-llama",
        "synthetic",
    )
    assert (request.requests, request.output_tokens, request.time_scale) == (16, 8, None)
    assert list(request.set_pairs) == ["max_num_seqs=8", "concurrency=4"]
    assert request.engine_options == {"request_rate": 2.5}
    assert list(request.constraints) == ["ttft_p99_ms<=200"]
    assert list(request.objectives) == ["output_tokens_per_s"]
    assert (request.optimizer, request.trials, request.seed, request.confirm) == ("gp", 7, 3, 1)
    assert (request.protocol.repeats, request.protocol.max_remeasures) == (5, 0)
    assert (request.run_dir, request.profiles_dir) == (tmp_path / "run", tmp_path / "p")
    assert fleet is not None and fleet.workers == 2
    assert resume is None
    assert options == {"json_": True, "quiet": False}


def test_tune_with_its_defaults_and_resume(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = asked(monkeypatch, "run_tune")
    assert runner.invoke(cli.app, ["tune", "--resume", str(tmp_path), "--quiet"]).exit_code == 0
    [((request, fleet, resume), options)] = calls
    default = TuneRequest(engine="hf", workload="humaneval")  # the default job
    assert (request.engine, request.model, request.workload) == ("hf", "", "humaneval")
    assert (list(request.set_pairs), list(request.constraints)) == ([], [])
    assert (request.optimizer, request.trials, request.confirm) == ("ladder", None, 2)
    assert (request.protocol, request.profiles_dir) == (default.protocol, default.profiles_dir)
    assert fleet is None and resume == tmp_path
    assert options == {"json_": False, "quiet": True}


def test_bench_asks_the_library_for_one_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = asked(monkeypatch, "run_bench")
    result = runner.invoke(
        cli.app,
        [
            *("bench", "--engine", "openai-server", "--server-cmd", "serve {port}"),
            *("--set", "batch_size=32", "--repeats", "4", "--trial-timeout", "60"),
        ],
    )
    assert result.exit_code == 0, result.output
    [((request,), options)] = calls
    assert isinstance(request, BenchRequest)
    assert request.engine == "openai-server" and list(request.set_pairs) == ["batch_size=32"]
    assert request.engine_options == {"server_cmd": "serve {port}"}
    assert (request.protocol.repeats, request.trial_timeout_s) == (4, 60)
    assert options == {"json_": False, "quiet": False}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slo", "ttft_p99_ms<<200"], "cannot read the limit"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_bad_flags_are_one_line_and_ask_the_library_nothing(
    monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    calls = asked(monkeypatch, "run_tune")
    result = runner.invoke(cli.app, ["tune", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert calls == []
