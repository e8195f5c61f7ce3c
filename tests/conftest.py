"""Shared fixtures. Nothing here downloads: models are synthesized into a per-session cache."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Where the environment forbids bytecode files (PYTHONDONTWRITEBYTECODE, set on CI's machine),
# every process the tests start would compile torch, transformers and vLLM from source again:
# the tests write them, as Python does by default (the first process that imports a module).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
# pytest-xdist's workers export COLUMNS=80 and LINES=24, which rich would fix as the width of the
# command line's consoles when they are made; a test that needs a width gives its own. Each
# worker gets one core's worth of threads: torch would otherwise run a thread per core in each
# worker (and the engines it starts), and each would wait on the other's.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # vLLM's CPU build pins its threads to core 0 whichever process starts it: two engines at
    # once would share one core. Each worker's engines get a core of their own.
    worker = int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw"))
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", str(worker % (os.cpu_count() or 1)))
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tuner.hardware.machine import Platform
from tuner.testing import fake_model_dir

sys.dont_write_bytecode = False  # in this process too (the environment above is its children's)

#: Every process the tests start carries this mark (the environment is inherited), so that the
#: session can tell at its end whether any outlived it.
SESSION_MARK = "TUNER_TEST_SESSION"
os.environ[SESSION_MARK] = uuid.uuid4().hex

#: How long the processes the tests started may take to stop once the session ends.
GRACE_S = float(os.environ.get("TUNER_TEST_GRACE_S", "20"))

#: The repository root, which tests read committed files from.
REPO_ROOT = Path(__file__).resolve().parent.parent

CPU = Platform("cpu", 0, frozenset({"cpu", "bf16", "fp16"}))
FOUR_GPUS = Platform(
    "cuda", 4, frozenset({"cuda", "bf16", "fp16", "multi_gpu", "module:flash_attn"})
)


@pytest.fixture(scope="session", autouse=True)
def tuner_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic models are built once per test session (and vLLM's EngineArgs probed once), in
    a folder of the session's own that its pytest-xdist workers share (builds are locked and
    files written whole), unless TUNER_CACHE names one already (to reuse them across
    sessions)."""
    if "TUNER_CACHE" in os.environ:
        return Path(os.environ["TUNER_CACHE"])
    base = tmp_path_factory.getbasetemp()
    path = (base.parent if "PYTEST_XDIST_WORKER" in os.environ else base) / "tuner-cache"
    path.mkdir(exist_ok=True)
    os.environ["TUNER_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def fake_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weightless model folder: enough to tokenize workloads for the fake engines."""
    return fake_model_dir(tmp_path_factory.mktemp("fake-model"))


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The synthetic tiny Llama, built on first use (real weights file, random values)."""
    from tuner.models import resolve_model

    return resolve_model("synthetic:tiny-llama").path


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests run only where NVML sees a GPU. In pytest-xdist's workers (`--dist
    loadgroup`), each test file runs whole in one worker, so that its module fixtures start
    once; each case of a `spread` test may run in either. The workers take the groups in this
    order (`--no-loadscope-reorder`): the end-to-end tests, vLLM's last of them, then the
    quick tiers."""
    from tuner.hardware.machine import detect_hardware

    for n, item in enumerate(items):
        spread = item.get_closest_marker("spread")
        group = f"case-{n}" if spread else item.nodeid.split("::")[0]  # else its file
        item.add_marker(pytest.mark.xdist_group(group))
    items.sort(key=_queue_place)
    hardware = detect_hardware()
    if hardware.gpus:
        return
    skip = pytest.mark.skip(reason=f"no GPU ({hardware.no_gpu_reason})")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def _queue_place(item: pytest.Item) -> int:
    if item.get_closest_marker("vllm"):
        return 2
    return 1 if item.nodeid.startswith("tests/e2e/") else 3


def _helpers_of_this_process(proc: object) -> bool:
    """multiprocessing's resource tracker of the test process itself, which ends with it."""
    import psutil

    try:
        assert isinstance(proc, psutil.Process)
        return proc.ppid() == os.getpid() and "multiprocessing.resource_tracker" in " ".join(
            proc.cmdline()
        )
    except psutil.Error:
        return False


#: The repository's committed results, which no test may write (a test writes under its own
#: tmp_path): their digests at the start of the session.
KEPT = ("profiles", "reports")


def _kept_digests() -> dict[str, str]:
    import hashlib

    root = Path(__file__).resolve().parent.parent
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in KEPT
        for path in sorted((root / folder).rglob("*"))
        if path.is_file()
    }


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_KEPT_KEY] = _kept_digests()


_KEPT_KEY = pytest.StashKey[dict[str, str]]()


_WORKER_FAILURES = pytest.StashKey[list[str]]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fails the run when a test wrote into the repository's profiles/ or reports/, or when
    any process a test started is still alive at the end (they are given a grace period to
    stop, then killed and named). A pytest-xdist worker hands what it found to the main
    process, which alone decides the run's exit status."""
    found = _what_the_tests_left(session)
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:  # a pytest-xdist worker
        workeroutput["tuner_failures"] = found
        return
    found += session.config.stash.get(_WORKER_FAILURES, [])
    if not found:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        for line in found:
            reporter.write_line(line, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook, in the main process
def pytest_testnodedown(node: Any, error: object) -> None:
    failures = node.config.stash.setdefault(_WORKER_FAILURES, [])
    worker = node.gateway.id
    failures += [f"[{worker}] {line}" for line in node.workeroutput.get("tuner_failures", [])]


def _what_the_tests_left(session: pytest.Session) -> list[str]:
    from tuner.processes import wait_gone

    found = []
    before = session.config.stash.get(_KEPT_KEY, None)
    if before is not None:
        after = _kept_digests()
        changed = sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))
        if changed:
            found.append(f"tests wrote into the repository: {', '.join(changed[:10])}")

    # This process's own helpers end with it: waiting on them would spend the whole grace.
    mark = os.environ[SESSION_MARK]
    left = wait_gone(mark, name=SESSION_MARK, timeout_s=GRACE_S, spare=_helpers_of_this_process)
    import psutil

    names = []
    for proc in left:
        try:
            names.append(f"{proc.pid} ({' '.join(proc.cmdline())[:200]})")
            proc.kill()
        except psutil.Error:
            continue
    if names:
        found.append(f"processes started by the tests outlived them: {'; '.join(names)}")
    return found
