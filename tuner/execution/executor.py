"""Executors: where a study's trials run. The study submits trials and consumes their results as
they complete, so that more than one may be in flight.

- `LocalExecutor`: one isolated worker process on this machine (`tuner.execution.worker`), one trial
  at a time; the worker keeps a loaded model between trials that change only run-time knobs.
- `InProcessExecutor`: an `Evaluate` function answers each trial in this process (a replay of a
  recorded landscape, a known surface in a benchmark of the search).

A trial's number is assigned by the study when it submits it. Trials are self-contained
(`TrialTask` is picklable), so an executor may run them elsewhere.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol

from tuner.execution.worker import Worker
from tuner.measure.trial import TrialResult, TrialTask
from tuner.specs.knobs import Value

#: `evaluate(number, origin, knobs)`: a trial answered without a worker.
Evaluate = Callable[[int, str, dict[str, Value]], TrialResult]
#: The task that measures some knobs (a study's `Setup.task` with its protocol).
MakeTask = Callable[[dict[str, Value]], TrialTask]


class Observer(Protocol):
    """Hears what a study does (the CLI draws it; tests record it)."""

    def trial_started(self, number: int, origin: str, knobs: dict[str, Value]) -> None: ...

    def trial_running(self, number: int, where: str) -> None:
        """A submitted trial began on a fleet's worker (`where`: worker, host, GPUs)."""
        ...

    def trial_progress(self, number: int, text: str) -> None: ...

    def trial_finished(self, result: TrialResult, best: TrialResult | None) -> None: ...


class NullObserver:
    """Observes nothing."""

    def trial_started(self, number: int, origin: str, knobs: dict[str, Value]) -> None:
        pass

    def trial_running(self, number: int, where: str) -> None:
        pass

    def trial_progress(self, number: int, text: str) -> None:
        pass

    def trial_finished(self, result: TrialResult, best: TrialResult | None) -> None:
        pass


class Executor(Protocol):
    """Runs submitted trials; `as_completed` yields their results as they finish."""

    #: Trials that may be in flight at once.
    slots: int

    def submit(self, number: int, origin: str, knobs: dict[str, Value]) -> None: ...

    def as_completed(self) -> Iterator[TrialResult]:
        """Results of submitted trials, each once, as they finish; trials submitted while
        iterating are included. Ends when nothing is in flight."""
        ...

    def close(self) -> None: ...


class _Queued:
    """Trials submitted and not yet run, run one at a time by `_answer`."""

    slots = 1

    def __init__(self, observer: Observer | None) -> None:
        self.observer = observer or NullObserver()
        self.queue: deque[tuple[int, str, dict[str, Value]]] = deque()

    def submit(self, number: int, origin: str, knobs: dict[str, Value]) -> None:
        self.queue.append((number, origin, knobs))

    def as_completed(self) -> Iterator[TrialResult]:
        while self.queue:
            number, origin, knobs = self.queue.popleft()
            self.observer.trial_started(number, origin, knobs)
            yield self._answer(number, origin, knobs)

    def _answer(self, number: int, origin: str, knobs: dict[str, Value]) -> TrialResult:
        raise NotImplementedError

    def close(self) -> None:
        pass


class LocalExecutor(_Queued):
    """One worker process on this machine, one trial at a time."""

    def __init__(
        self,
        make_task: MakeTask,
        timeout_s: float,
        log_dir: Path,
        observer: Observer | None = None,
        run_dir: Path | None = None,
    ) -> None:
        super().__init__(observer)
        self.make_task = make_task
        self.timeout_s = timeout_s
        self.run_dir = run_dir
        self.worker = Worker(log_dir)

    def _answer(self, number: int, origin: str, knobs: dict[str, Value]) -> TrialResult:
        return run_trial(
            self.worker,
            self.make_task(knobs),
            number,
            origin,
            knobs,
            self.timeout_s,
            self.observer,
            self.run_dir,
        )

    def close(self) -> None:
        self.worker.close()


class InProcessExecutor(_Queued):
    """Trials answered by a function in this process."""

    def __init__(self, evaluate: Evaluate, observer: Observer | None = None) -> None:
        super().__init__(observer)
        self.evaluate = evaluate

    def _answer(self, number: int, origin: str, knobs: dict[str, Value]) -> TrialResult:
        return self.evaluate(number, origin, knobs)


def run_trial(
    worker: Worker,
    task: TrialTask,
    number: int,
    origin: str,
    knobs: dict[str, Value],
    timeout_s: float,
    observer: Observer,
    run_dir: Path | None = None,
) -> TrialResult:
    """Measures one configuration in `worker` and records everything about it."""
    started_at = datetime.now(UTC)
    start = time.monotonic()
    outcome = worker.run(
        task, timeout_s, progress=lambda text: observer.trial_progress(number, text)
    )
    log = outcome.log
    if log is not None and run_dir is not None and Path(log).is_relative_to(run_dir):
        log = str(Path(log).relative_to(run_dir))
    return TrialResult(
        number=number,
        origin=origin,
        knobs=knobs,
        status=outcome.status,
        reason=outcome.reason,
        measurement=outcome.measurement,
        load_s=outcome.load_s,
        reused_model=outcome.reused_model,
        wall_s=time.monotonic() - start,
        started_at=started_at,
        log=log,
        versions=outcome.versions,
        engine_config=outcome.engine_config,
    )


def bench(
    make_task: MakeTask,
    knobs: dict[str, Value],
    timeout_s: float,
    log_dir: Path,
    observer: Observer | None = None,
) -> TrialResult:
    """Measures one configuration (`tuner bench`) in a worker of its own."""
    executor = LocalExecutor(make_task, timeout_s, log_dir, observer)
    try:
        executor.submit(0, "bench", knobs)
        return next(executor.as_completed())
    finally:
        executor.close()
