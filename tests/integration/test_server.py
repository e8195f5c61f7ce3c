"""The server engines' load client against a local stub server, in an environment without vLLM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

ROOT = REPO_ROOT


@pytest.fixture
def no_vllm(tmp_path: Path) -> dict[str, str]:
    """An environment where `import vllm` fails, for this process's children."""
    blocker = tmp_path / "blocker" / "vllm"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('vllm is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker.parent)}
    probe = subprocess.run([sys.executable, "-c", "import vllm"], env=env, capture_output=True)
    assert probe.returncode != 0
    return env


def bench(env: dict[str, str], fail_every: int, *extra: str) -> subprocess.CompletedProcess[str]:
    command = f"{{python}} -m tuner.testing --port {{port}} --fail-every {fail_every}"
    args = [
        *("bench", "--engine", "openai-server", "--server-cmd", command),
        *("--model", "synthetic:tiny-llama", "--requests", "8", "--output-tokens", "4"),
        *("--run-time-limit", "20", "--warmup-time-limit", "20", "--max-remeasures", "0"),
        "--json",
        *extra,
    ]
    return subprocess.run(
        [sys.executable, "-m", "tuner", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_a_clean_server_is_measured_without_vllm(no_vllm: dict[str, str]) -> None:
    done = bench(no_vllm, 0)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "ok"
    m = result["measurement"]
    assert m["failed_requests"] == 0
    assert all(r["requests"] == 8 and r["output_tokens"] == 32 for r in m["runs"])
    assert m["latency"]["ttft"] is not None


def test_failed_requests_are_counted_and_the_bench_is_not_clean(no_vllm: dict[str, str]) -> None:
    # Every second request answered 500: half the requests fail in every run.
    done = bench(no_vllm, 2)
    assert done.returncode == 1, done.stderr
    assert "not a clean measurement" in done.stderr and "requests failed" in done.stderr
    m = json.loads(done.stdout)["measurement"]
    assert m["failed_requests"] == 3 * 4  # three timed runs, four refusals each
    assert all(r["failed_requests"] == 4 and r["requests"] == 4 for r in m["runs"])
    assert any("server answered 500: stub: request" in f for f in m["failures"])


def test_a_server_that_refuses_every_request_is_a_failed_trial(no_vllm: dict[str, str]) -> None:
    done = bench(no_vllm, 1)
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["status"] == "crashed"
    assert result["reason"].startswith("every request failed (8): server answered 500")


def test_vllm_server_without_vllm_points_to_openai_server(no_vllm: dict[str, str]) -> None:
    done = bench(no_vllm, 0, "--engine", "vllm-server")
    assert done.returncode == 2
    assert "--engine openai-server" in done.stderr
