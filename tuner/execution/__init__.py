"""Where and how a trial runs: an isolated worker process, on this machine or on a Dask fleet.

- `worker`: the worker process that loads an engine, measures one trial and answers with its
  result; it keeps a loaded model between trials that change only run-time knobs (`Worker`);
- `executor`: the seam a study submits trials through (`Executor`), with `LocalExecutor` (one
  worker here) and `InProcessExecutor` (an evaluate function: replays, benchmarks of the search);
- `fleet`: a Dask cluster of GPU workers, local or from a batch queue (`FleetSpec`, `open_fleet`,
  `WorkerMachine`);
- `dask_executor`: trials placed on the fleet's workers, one per GPU group (`DaskExecutor`).

Dask is imported only when a fleet is opened.
"""

from tuner.execution.dask_executor import DaskExecutor
from tuner.execution.executor import (
    Executor,
    InProcessExecutor,
    LocalExecutor,
    NullObserver,
    Observer,
    run_trial,
)
from tuner.execution.fleet import Fleet, FleetSpec, WorkerMachine, open_fleet
from tuner.execution.worker import Worker

__all__ = [
    "DaskExecutor",
    "Executor",
    "Fleet",
    "FleetSpec",
    "InProcessExecutor",
    "LocalExecutor",
    "NullObserver",
    "Observer",
    "Worker",
    "WorkerMachine",
    "open_fleet",
    "run_trial",
]
