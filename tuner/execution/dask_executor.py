"""`DaskExecutor`: a study's trials on the workers of a Dask fleet, as many at once as it has
slots.

Each trial is one Dask task that asks for the GPUs it needs (`fleet.RESOURCE`). On its worker the
task runs the trial in that worker's own trial process (`tuner.execution.worker.Worker`, kept
between trials so that a loaded model is reused, replaced after a failure), exactly as a study on
one machine does; a hung or crashed engine is a trial status, and the Dask worker lives on. A Dask
worker that dies mid-trial is retried once on another worker by the scheduler, then the trial is
`crashed` with that reason; a lost scheduler stops the study with one line (finished trials are
in the run directory already, and `--resume` continues).

Where each trial runs is published as it starts (a Dask event), drawn by the progress view, and
kept in its result (`TrialResult.placement`).
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuner.errors import TunerError
from tuner.execution.executor import Evaluate, MakeTask, NullObserver, Observer, run_trial
from tuner.execution.fleet import RESOURCE, Fleet, is_daemon, worker_machine
from tuner.execution.worker import Worker, one_line
from tuner.measure.trial import Placement, TrialResult
from tuner.specs.knobs import Value


def _topic(study: str) -> str:
    """The Dask event topic of one study's trials (a client has one handler per topic)."""
    return f"tuner-trial-{study}"


# Per Dask worker process: its trial process (one per study) and a lock that keeps it to one
# trial at a time even where the worker has several threads.
_LOCK = threading.Lock()
_WORKERS: dict[str, Worker] = {}
_EVALUATORS: dict[str, Evaluate] = {}


def _placement() -> Placement:
    from distributed import get_worker

    worker = get_worker()
    machine = worker_machine()
    return Placement(
        worker=str(worker.name),
        address=worker.address,
        host=machine.host,
        gpus=list(machine.gpus),
        gpu_model=machine.gpu_model,
    )


def _trial_on_worker(
    study: str,
    number: int,
    origin: str,
    knobs: dict[str, Value],
    work: Any,
    timeout_s: float,
    log_dir: str,
    run_dir: str | None,
) -> TrialResult:
    """One trial, run inside a Dask worker: `work` is a `TrialTask` or an `Evaluate`."""
    from distributed import get_worker

    dask_worker = get_worker()
    with _LOCK:
        placement = _placement()
        dask_worker.log_event(_topic(study), {"number": number, "text": placement.text})
        if callable(work):
            # The first sight of a study's evaluator on this worker keeps it, with its state
            # (a replay remembers the model this worker last loaded).
            evaluate = _EVALUATORS.setdefault(study, work)
            result = evaluate(number, origin, knobs)
        else:
            worker = _WORKERS.get(study)
            if worker is None:
                env = {"CUDA_VISIBLE_DEVICES": ",".join(placement.gpus)} if placement.gpus else {}
                worker = _WORKERS[study] = Worker(Path(log_dir), env=env)
            result = run_trial(
                worker,
                work,
                number,
                origin,
                knobs,
                timeout_s,
                _Events(dask_worker, study),
                Path(run_dir) if run_dir else None,
            )
        return result.model_copy(update={"placement": placement})


class _Events(NullObserver):
    """A trial's progress, published from its worker as Dask events."""

    def __init__(self, dask_worker: Any, study: str) -> None:
        self.dask_worker, self.study = dask_worker, study

    def trial_progress(self, number: int, text: str) -> None:
        self.dask_worker.log_event(_topic(self.study), {"number": number, "text": text})


def _close_on_worker(study: str) -> None:
    worker = _WORKERS.pop(study, None)
    _EVALUATORS.pop(study, None)
    if worker is not None:
        worker.close()


class DaskExecutor:
    """Trials as Dask tasks on a fleet's workers (all of them, or the `workers` given)."""

    def __init__(
        self,
        fleet: Fleet,
        *,
        make_task: MakeTask | None = None,
        evaluate: Evaluate | None = None,
        timeout_s: float = 3600.0,
        log_dir: Path | None = None,
        observer: Observer | None = None,
        run_dir: Path | None = None,
        workers: tuple[str, ...] | None = None,
    ) -> None:
        if (make_task is None) == (evaluate is None):
            raise ValueError("a DaskExecutor runs tasks or an evaluator, one of the two")
        self.fleet = fleet
        self.client = fleet.client
        self.make_task = make_task
        self.evaluate = evaluate
        self.timeout_s = timeout_s
        self.log_dir = log_dir or Path("workers")
        self.observer = observer or NullObserver()
        self.run_dir = run_dir
        self.workers = list(workers) if workers else None
        self.study = uuid.uuid4().hex[:12]
        owned = self._owned()
        # One trial more than the workers, queued at the scheduler: a worker that finishes
        # starts the next trial at once, while the optimizer makes the one after (its ask and
        # tell would otherwise leave the worker idle each time).
        self.slots = len(owned) + 1
        self.most_gpus = max(owned.values())
        self._futures: dict[Any, tuple[int, str, dict[str, Value]]] = {}
        self._failed: list[TrialResult] = []  # trials no worker can take, answered at once
        self._queue: Any = None
        self.client.subscribe_topic(_topic(self.study), self._heard)

    def _owned(self) -> dict[str, float]:
        """GPU resources of each worker this executor may use."""
        info = self.client.scheduler_info(n_workers=-1)["workers"]
        owned = {
            address: w.get("resources", {}).get(RESOURCE, 0)
            for address, w in info.items()
            if self.workers is None or address in self.workers
        }
        if not owned:
            raise TunerError(f"{self.fleet.spec.describe()}: no worker to run trials on")
        daemons = [a for a, d in self.client.run(is_daemon).items() if d and a in owned]
        if daemons:
            raise TunerError(
                f"the Dask workers at {', '.join(daemons)} are daemon processes, which cannot "
                "start trial processes: start them with DASK_DISTRIBUTED__WORKER__DAEMON=False"
            )
        if not any(owned.values()):
            raise TunerError(
                f"the workers of {self.fleet.spec.describe()} declare no {RESOURCE} resource: "
                f"start each with --nthreads 1 --resources {RESOURCE}=<its GPUs, 1 without>"
            )
        return owned

    def _heard(self, event: tuple[float, dict[str, Any]]) -> None:
        _, msg = event
        number, text = int(msg["number"]), str(msg["text"])
        if text.startswith("on "):
            self.observer.trial_running(number, text)
        else:
            self.observer.trial_progress(number, text)

    def submit(self, number: int, origin: str, knobs: dict[str, Value]) -> None:
        if self.make_task is not None:
            work: Any = self.make_task(knobs)
            gpus = max(1, work.gpus)
        else:
            work, gpus = self.evaluate, 1
        self.observer.trial_started(number, origin, knobs)
        if gpus > self.most_gpus:
            # No worker could ever take it: the scheduler would wait forever.
            self._failed.append(
                _crashed(
                    number,
                    origin,
                    knobs,
                    f"needs {gpus} GPUs; the largest worker has {self.most_gpus:g}",
                )
            )
            return
        future = self.client.submit(
            _trial_on_worker,
            self.study,
            number,
            origin,
            knobs,
            work,
            self.timeout_s,
            str(self.log_dir),
            str(self.run_dir) if self.run_dir else None,
            key=f"trial-{self.study}-{number}",
            resources={RESOURCE: gpus},
            workers=self.workers,
            allow_other_workers=False,
            pure=False,
        )
        self._futures[future] = (number, origin, knobs)
        if self._queue is not None:
            self._queue.add(future)

    def as_completed(self) -> Iterator[TrialResult]:
        from distributed import as_completed

        while self._failed or self._futures:
            while self._failed:
                yield self._failed.pop(0)
            if not self._futures:
                continue
            self._queue = as_completed(list(self._futures))
            try:
                for future in self._queue:
                    number, origin, knobs = self._futures.pop(future)
                    yield self._result(future, number, origin, knobs)
                    while self._failed:
                        yield self._failed.pop(0)
            finally:
                self._queue = None

    def _lost(self, number: int) -> TunerError:
        return TunerError(
            f"lost {self.fleet.spec.describe()} with trial {number} in flight; finished trials "
            "are kept in the run directory, and tuner tune --resume continues the study"
        )

    def _result(
        self, future: Any, number: int, origin: str, knobs: dict[str, Value]
    ) -> TrialResult:
        from distributed.scheduler import KilledWorker

        if future.status == "cancelled" or self.client.status not in ("running", "connecting"):
            raise self._lost(number)
        try:
            return future.result()
        except KilledWorker as exc:
            return _crashed(
                number,
                origin,
                knobs,
                f"the Dask worker running it died, twice ({one_line(exc)})",
            )
        except (OSError, TimeoutError) as exc:  # the scheduler went away while we asked
            raise self._lost(number) from exc
        except Exception as exc:  # the task itself failed: tuner's bug, kept as the reason
            return _crashed(number, origin, knobs, f"Dask task failed: {one_line(exc)}")

    def close(self) -> None:
        futures, self._futures = list(self._futures), {}
        if self.client.status != "running":
            return  # a lost scheduler leaves nothing to cancel or close
        with contextlib.suppress(Exception):
            self.client.cancel(futures)
        with contextlib.suppress(Exception):  # a worker gone leaves nothing to close on it
            self.client.run(_close_on_worker, self.study)
        self.client.unsubscribe_topic(_topic(self.study))


def _crashed(number: int, origin: str, knobs: dict[str, Value], reason: str) -> TrialResult:
    return TrialResult(
        number=number,
        origin=origin,
        knobs=knobs,
        status="crashed",
        reason=reason,
        wall_s=0.0,
        started_at=datetime.now(UTC),
    )
