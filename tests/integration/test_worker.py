"""Trial isolation with real worker processes and the fakes of tuner.testing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from tuner.engines.base import EngineBase
from tuner.execution.worker import Worker, one_line
from tuner.measure.measurement import MeasurementProtocol
from tuner.measure.trial import TrialTask
from tuner.specs.workloads import Request

is_oom = EngineBase.is_oom

REQUESTS = tuple(Request((1, 2, 3), 4, "p") for _ in range(8))
PROTOCOL = MeasurementProtocol(repeats=3, run_time_limit_s=5, warmup_time_limit_s=5)


def task(engine: str, batch_size: int, kernel: str = "basic") -> TrialTask:
    return TrialTask(
        engine=f"tuner.testing:{engine}",
        model_dir="unused",
        load_knobs={"kernel": kernel},
        run_knobs={"batch_size": batch_size, "cache": "dynamic"},
        requests=REQUESTS,
        protocol=PROTOCOL,
    )


@pytest.fixture
def worker(tmp_path: Path):  # type: ignore[no-untyped-def]
    w = Worker(tmp_path / "workers")
    yield w
    w.close()


def test_a_worker_that_dies_is_a_crashed_trial_and_the_next_trial_runs(worker: Worker) -> None:
    outcome = worker.run(task("CrashingEngine", 64), timeout_s=60)
    assert outcome.status == "crashed"
    assert "killed by SIGKILL" in (outcome.reason or "")
    assert outcome.measurement is None
    after = worker.run(task("CrashingEngine", 8), timeout_s=60)
    assert after.status == "ok" and after.measurement is not None
    assert after.measurement.runs[0].requests == len(REQUESTS)


def test_a_hang_past_the_timeout_is_a_timeout_and_the_next_trial_runs(worker: Worker) -> None:
    outcome = worker.run(task("HangingEngine", 64), timeout_s=3)
    assert outcome.status == "timeout"
    assert "3 s trial timeout" in (outcome.reason or "")
    after = worker.run(task("HangingEngine", 8), timeout_s=60)
    assert after.status == "ok"


def test_out_of_memory_is_its_own_status(worker: Worker) -> None:
    outcome = worker.run(task("FakeEngine", 200), timeout_s=60)
    assert outcome.status == "oom"
    assert outcome.reason == "EngineOutOfMemory: fake engine: batch_size=200 does not fit"
    assert outcome.log is not None and "EngineOutOfMemory" in Path(outcome.log).read_text()


def test_an_unknown_adapter_is_a_crashed_trial(worker: Worker) -> None:
    outcome = worker.run(task("NoSuchEngine", 1), timeout_s=60)
    assert outcome.status == "crashed"
    assert "cannot load engine adapter" in (outcome.reason or "")


def test_model_is_reused_when_only_run_time_knobs_change(worker: Worker) -> None:
    first = worker.run(task("FakeEngine", 4), timeout_s=60)
    second = worker.run(task("FakeEngine", 16), timeout_s=60)
    third = worker.run(task("FakeEngine", 16, kernel="fused"), timeout_s=60)
    assert (first.reused_model, second.reused_model, third.reused_model) == (False, True, False)
    assert first.load_s is not None and second.load_s is None and third.load_s is not None
    assert second.versions == {"fake": "1.0"}


def test_progress_is_reported(worker: Worker) -> None:
    seen: list[str] = []
    # No re-measuring: on a busy machine the runs' spread could add a round this is not about.
    steady = replace(
        task("FakeEngine", 4), protocol=PROTOCOL.model_copy(update={"max_remeasures": 0})
    )
    worker.run(steady, timeout_s=60, progress=seen.append)
    assert seen == ["loading", "warm-up", "run 1/3", "run 2/3", "run 3/3"]


def test_oom_classification() -> None:
    class OutOfMemoryError(RuntimeError):
        pass

    assert is_oom(MemoryError())
    assert is_oom(OutOfMemoryError("CUDA"))
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ..."))
    wrapped = ValueError("load failed")
    wrapped.__cause__ = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    assert is_oom(wrapped)
    assert not is_oom(ValueError("bad dtype"))
    assert one_line(ValueError("first\nsecond")) == "ValueError: first"
