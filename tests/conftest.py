"""Shared fixtures. Nothing here downloads: models are synthesized into a per-session cache."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# pytest-xdist's workers export COLUMNS=80 and LINES=24, which rich would fix as the width of the
# command line's consoles when they are made; a test that needs a width gives its own.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tuner.hardware.machine import Platform
from tuner.testing import fake_model_dir

#: Every process the tests start carries this mark (the environment is inherited), so that the
#: session can tell at its end whether any outlived it.
SESSION_MARK = "TUNER_TEST_SESSION"
os.environ[SESSION_MARK] = uuid.uuid4().hex

#: The repository root, which tests read committed files from.
REPO_ROOT = Path(__file__).resolve().parent.parent

CPU = Platform("cpu", 0, frozenset({"cpu", "bf16", "fp16"}))
FOUR_GPUS = Platform(
    "cuda", 4, frozenset({"cuda", "bf16", "fp16", "multi_gpu", "module:flash_attn"})
)


@pytest.fixture(scope="session", autouse=True)
def tuner_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic models are built once per test session, in a folder of the session's own,
    unless TUNER_CACHE names one already (to reuse builds across sessions)."""
    if "TUNER_CACHE" in os.environ:
        return Path(os.environ["TUNER_CACHE"])
    path = tmp_path_factory.mktemp("tuner-cache")
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests run only where NVML sees a GPU."""
    from tuner.hardware.machine import detect_hardware

    hardware = detect_hardware()
    if hardware.gpus:
        return
    skip = pytest.mark.skip(reason=f"no GPU ({hardware.no_gpu_reason})")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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


def _fail(session: pytest.Session, line: str) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line, red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fails the run when a test wrote into the repository's profiles/ or reports/, or when
    any process a test started is still alive at the end (they are given a grace period to
    stop, then killed and named)."""
    from tuner.processes import wait_gone

    before = session.config.stash.get(_KEPT_KEY, None)
    if before is not None:
        after = _kept_digests()
        changed = sorted(n for n in before.keys() | after.keys() if before.get(n) != after.get(n))
        if changed:
            _fail(session, f"tests wrote into the repository: {', '.join(changed[:10])}")

    left = [
        p
        for p in wait_gone(os.environ[SESSION_MARK], name=SESSION_MARK, timeout_s=20)
        if not _helpers_of_this_process(p)
    ]
    if not left:
        return
    import psutil

    names = []
    for proc in left:
        try:
            names.append(f"{proc.pid} ({' '.join(proc.cmdline())[:200]})")
            proc.kill()
        except psutil.Error:
            continue
    if names:
        _fail(session, f"processes started by the tests outlived them: {'; '.join(names)}")
