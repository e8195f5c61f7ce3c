"""No process tuner starts outlives its trial or tuner itself (issue 21, defects 1 and 10): a
server trial that fails, times out, or is cut by SIGTERM, kill -9 of tuner or of its whole
process group, or its Dask worker's death. Each case marks the processes it starts through the
environment and counts those alive afterwards; the stub server starts a child of its own, as
vLLM's server does, so that a server's whole tree is counted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

from tuner.processes import marked, wait_gone

CASE = "TUNER_TEST_CASE"
STUB = "{python} -m tuner.testing --port {port} --child"
COMMON = (
    *("--model", "synthetic:tiny-llama", "--requests", "8", "--output-tokens", "4"),
    *("--repeats", "3", "--max-remeasures", "0"),
)


def tuner(
    args: list[str], cwd: Path, *, timeout_s: float = 300, **popen: Any
) -> tuple[subprocess.CompletedProcess[str], list[psutil.Process]]:
    """Runs `tuner ARGS` to its end; returns it and the processes it started still alive."""
    mark = uuid.uuid4().hex
    done = subprocess.run(
        [sys.executable, "-m", "tuner", *args],
        cwd=cwd,
        env={**os.environ, CASE: mark},
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        **popen,
    )
    return done, wait_gone(mark, name=CASE, timeout_s=15)


def started(args: list[str], cwd: Path, **popen: Any) -> tuple[subprocess.Popen[str], str]:
    """`tuner ARGS` started, and its mark, once its server has started."""
    mark = uuid.uuid4().hex
    proc = subprocess.Popen(
        [sys.executable, "-m", "tuner", *args],
        cwd=cwd,
        env={**os.environ, CASE: mark},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **popen,
    )
    end = time.monotonic() + 240
    while not _stubs(mark):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "the server never started"
        time.sleep(0.2)
    return proc, mark


def _stubs(mark: str) -> list[psutil.Process]:
    """The stub servers (`python -m tuner.testing ...`) among the marked processes."""
    found = []
    for proc in marked(mark, name=CASE):
        try:
            if proc.cmdline()[1:3] == ["-m", "tuner.testing"]:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def bench(mode: str, *extra: str) -> list[str]:
    return [
        *("bench", "--engine", "openai-server", *COMMON),
        *("--run-time-limit", "3", "--warmup-time-limit", "5"),
        *("--server-cmd", f"{STUB} --mode {mode}", "--json", *extra),
    ]


def slow_study(run_dir: Path, *extra: str) -> list[str]:
    """A study of a stub that waits before each token: trials that last long enough to be
    interrupted."""
    return [
        *("tune", "--engine", "openai-server", *COMMON),
        *("--run-time-limit", "60", "--warmup-time-limit", "60", "--trials", "2"),
        *("--confirm", "0", "--server-cmd", f"{STUB} --delay-s 0.5"),
        *("--run-dir", str(run_dir), "--profiles-dir", str(run_dir.parent / "profiles")),
        *extra,
    ]


@pytest.mark.parametrize("mode", ["500", "exit", "null"])
def test_a_failed_server_trial_leaves_no_process(tmp_path: Path, mode: str) -> None:
    done, left = tuner(bench(mode), tmp_path)
    assert done.returncode == 1, done.stderr
    assert json.loads(done.stdout)["status"] == "crashed"
    assert left == []


def test_a_server_trial_killed_at_its_timeout_leaves_no_process(tmp_path: Path) -> None:
    # The stub hangs after one token; the worker is killed at the trial timeout, before the
    # warm-up's own limit: the worker cannot stop its server, its parent does.
    args = bench("hang", "--warmup-time-limit", "120", "--trial-timeout", "5")
    done, left = tuner(args, tmp_path)
    assert done.returncode == 1
    result = json.loads(done.stdout)
    assert result["status"] == "timeout" and "worker killed" in result["reason"]
    assert left == []


@pytest.mark.slow
def test_sigterm_stops_tuner_as_ctrl_c_does_and_the_study_resumes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    proc, mark = started(slow_study(run_dir), tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert f"interrupted: finished trials are kept; resume with tuner tune --resume {run_dir}" in (
        " ".join(stderr.split())
    )
    assert "Traceback" not in stderr
    assert wait_gone(mark, name=CASE, timeout_s=15) == []
    resumed, left = tuner(["tune", "--resume", str(run_dir), "--trials", "1"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert left == []


@pytest.mark.parametrize("group", [False, True], ids=["tuner", "its-process-group"])
def test_kill_9_leaves_no_server(tmp_path: Path, group: bool) -> None:
    # kill -9 of tuner alone: its worker sees its parent gone and stops what it started. Of
    # tuner's whole process group (tuner and its worker at once): the server's guard gets
    # the parent-death signal and stops the server's group.
    proc, mark = started(slow_study(tmp_path / "run"), tmp_path, start_new_session=group)
    if group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.kill()
    proc.communicate(timeout=60)
    assert wait_gone(mark, name=CASE, timeout_s=20) == []


def test_a_dask_worker_that_dies_takes_its_server_trial_with_it(tmp_path: Path) -> None:
    proc, mark = started(slow_study(tmp_path / "run", "--workers", "1"), tmp_path)
    stub = _stubs(mark)[0]
    guard = stub.parent()
    trial_process = guard.parent()
    dask_worker = trial_process.parent()
    assert "tuner.processes" in " ".join(guard.cmdline())
    dask_worker.kill()
    _, alive = psutil.wait_procs([guard, stub, trial_process], timeout=20)
    assert alive == []
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert wait_gone(mark, name=CASE, timeout_s=20) == []


def test_the_guard_passes_on_the_server_code_and_leaves_no_child(tmp_path: Path) -> None:
    mark = uuid.uuid4().hex
    script = "import subprocess, sys; subprocess.Popen(['sleep', '600']); sys.exit(7)"
    done = subprocess.run(
        [sys.executable, "-m", "tuner.processes", "--", sys.executable, "-c", script],
        env={**os.environ, CASE: mark},
        timeout=60,
        check=False,
    )
    assert done.returncode == 7
    assert wait_gone(mark, name=CASE, timeout_s=10) == []


def test_a_process_left_by_a_test_fails_the_run_from_either_pytest_xdist_worker(
    tmp_path: Path,
) -> None:
    # This suite's own check (tests/conftest.py), in a session of its own: a worker's finding
    # must reach the main process, which alone sets the exit status.
    from tests.conftest import REPO_ROOT

    (tmp_path / "conftest.py").write_text(
        "from tests.conftest import pytest_sessionfinish, pytest_sessionstart, "
        "pytest_testnodedown\n"
    )
    sleeper = f"import time; time.sleep(60)  # {uuid.uuid4().hex}"
    (tmp_path / "test_leaves.py").write_text(
        "import subprocess, sys\n\n\n"
        "def test_leaves_a_process():\n"
        f"    subprocess.Popen([sys.executable, '-c', {sleeper!r}])\n\n\n"
        "def test_leaves_nothing():\n"
        "    pass\n"
    )
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TUNER_TEST_GRACE_S": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "2 passed" in done.stdout
    assert "] processes started by the tests outlived them" in done.stdout, done.stdout
    assert not [p for p in psutil.process_iter(["cmdline"]) if sleeper in (p.info["cmdline"] or [])]
