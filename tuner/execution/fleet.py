"""A fleet: the Dask cluster a study's trials run on, and what each of its workers has.

- `--workers N` on one host: dask-cuda's `LocalCUDACluster` where there are GPUs (one worker per
  GPU, each pinned to it through `CUDA_VISIBLE_DEVICES`), a `LocalCluster` of N single-threaded
  worker processes on a machine without one.
- `--dask-scheduler tcp://HOST:PORT`: a running cluster. Start its workers as non-daemon
  processes (they start trial processes) with one thread and their GPU count as a resource:
  `DASK_DISTRIBUTED__WORKER__DAEMON=False dask worker tcp://HOST:PORT --nthreads 1 --resources
  GPU=1` (on a machine without GPUs, `GPU=1` counts the worker as one trial slot).
- `--cluster slurm|pbs|lsf --workers N`: dask-jobqueue submits N worker jobs, configured the
  way dask-jobqueue is configured (its `jobqueue.yaml`: queue, cores, memory, walltime, job
  directives such as `--gres=gpu:1`).

A worker runs one trial at a time, in a trial process of its own (`tuner.execution.worker`), on the
GPUs it owns: a trial that needs k GPUs asks the scheduler for k `GPU` resources. Each worker
reports its machine (`worker_machine`), so that a study knows the GPU model it tunes for and a fleet
of mixed GPUs splits into one group per model.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from tuner.errors import TunerError
from tuner.hardware.machine import Hardware, Platform, detect_hardware, detect_platform, slugify

#: The Dask resource a trial asks for, one per GPU it uses (one per worker without GPUs).
RESOURCE = "GPU"
#: A worker that dies while running a trial: the trial runs once more elsewhere, then is crashed.
ALLOWED_FAILURES = 1
ClusterKind = Literal["local", "slurm", "pbs", "lsf"]
CLUSTERS: tuple[str, ...] = get_args(ClusterKind)
_JOBQUEUE = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "lsf": "LSFCluster"}


class FleetSpec(BaseModel):
    """How to reach the fleet; kept in `study.json` so that `--resume` reopens it."""

    model_config = ConfigDict(extra="forbid")
    cluster: ClusterKind = "local"
    workers: int | None = Field(default=None, ge=1)
    scheduler: str | None = None
    gpus_per_worker: int = Field(default=1, ge=1)

    @classmethod
    def given(
        cls,
        workers: int | None = None,
        scheduler: str | None = None,
        cluster: str = "local",
        gpus_per_worker: int = 1,
    ) -> FleetSpec | None:
        """The fleet `tuner tune`'s options name (None: trials one at a time on this
        machine); one line when they do not go together."""
        if cluster not in CLUSTERS:
            raise TunerError(f"--cluster takes {', '.join(CLUSTERS)}, not {cluster!r}")
        if scheduler and (workers or cluster != "local"):
            raise TunerError(
                "--dask-scheduler uses a running cluster: leave out --workers/--cluster"
            )
        if cluster != "local" and not workers:
            raise TunerError(
                f"--cluster {cluster} submits worker jobs: say how many with --workers"
            )
        if not (workers or scheduler):
            if gpus_per_worker != 1:
                raise TunerError("--gpus-per-worker goes with --workers or --cluster")
            return None
        return cls(
            cluster=cluster,  # type: ignore[arg-type]  # one of CLUSTERS, checked above
            workers=workers,
            scheduler=scheduler,
            gpus_per_worker=gpus_per_worker,
        )

    def describe(self) -> str:
        if self.scheduler:
            return f"the Dask scheduler at {self.scheduler}"
        if self.cluster != "local":
            return f"{self.workers} {self.cluster} worker jobs"
        return f"{self.workers} local Dask workers"


@dataclass(frozen=True)
class WorkerMachine:
    """What one worker has: its machine, its platform facts, and the GPUs it owns."""

    hardware: Hardware
    platform: Platform
    gpus: tuple[str, ...]
    host: str

    @property
    def gpu_model(self) -> str:
        return self.hardware.gpu_name


def is_daemon() -> bool:
    """Whether this process is a daemon, which may not start the trial process a worker needs."""
    import multiprocessing

    return bool(multiprocessing.current_process().daemon)


#: The attribute of a Dask worker that tells it which machine to report (`tell_machine`).
TOLD_MACHINE = "tuner_machine"


def tell_machine(dask_worker: Any, machine: WorkerMachine) -> None:
    """Have `dask_worker` report `machine` as its own (`worker_machine`), whatever it runs on: a
    worker plugin calls it at setup (`tuner.testing.fake_machines`, to test mixed fleets without
    GPUs)."""
    setattr(dask_worker, TOLD_MACHINE, machine)


def worker_machine(modules: Iterable[str] = (), dask_worker: Any = None) -> WorkerMachine:
    """The machine of a Dask worker: `dask_worker`, or the one running this task (`Client.run`
    calls it on every worker, passing each).

    A worker may have been told another machine than the one it runs on (`tell_machine`)."""
    from distributed import get_worker

    worker = dask_worker or get_worker()
    told = getattr(worker, TOLD_MACHINE, None)
    if told is not None:
        return told
    hardware = detect_hardware()
    platform = detect_platform(modules)
    owned = int(worker.state.total_resources.get(RESOURCE, 1))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = visible.split(",") if visible else [str(g.index) for g in hardware.gpus]
    gpus = tuple(ids[:owned]) if hardware.gpus else ()
    if gpus:
        # The worker's share of the machine: its GPUs, as the platform facts count them.
        platform = replace(platform, gpu_count=len(gpus))
        if len(gpus) < 2:
            platform = replace(platform, features=platform.features - {"multi_gpu"})
    return WorkerMachine(hardware, platform, gpus, socket.gethostname())


@dataclass(frozen=True)
class Group:
    """The workers of one GPU model, and the machine they share."""

    machine: WorkerMachine
    workers: tuple[str, ...]

    @property
    def gpu_model(self) -> str:
        return self.machine.gpu_model

    @property
    def slug(self) -> str:
        return slugify(self.gpu_model)


class Fleet:
    """An open Dask client and the cluster it talks to (closed with the fleet when tuner
    started it)."""

    def __init__(self, spec: FleetSpec, client: Any, cluster: Any | None = None) -> None:
        self.spec = spec
        self.client = client
        self.cluster = cluster

    def groups(self, modules: Iterable[str] = ()) -> list[Group]:
        """The workers by GPU model (largest group first); one line when there are none."""
        machines: dict[str, WorkerMachine] = self.client.run(worker_machine, list(modules))
        if not machines:
            raise TunerError(f"{self.spec.describe()} has no workers")
        by_model: dict[str, list[tuple[str, WorkerMachine]]] = {}
        for address, machine in sorted(machines.items()):
            by_model.setdefault(machine.gpu_model, []).append((address, machine))
        groups = [
            Group(members[0][1], tuple(a for a, _ in members)) for members in by_model.values()
        ]
        return sorted(groups, key=lambda g: (-len(g.workers), g.gpu_model))

    def group(self, gpu_model: str | None, modules: Iterable[str] = ()) -> Group:
        """The workers of `gpu_model`, or, given none, all the workers when they share one
        model; one line when there are none of that model, or several models."""
        groups = self.groups(modules)
        models = ", ".join(g.gpu_model for g in groups)
        if gpu_model is not None:
            for group in groups:
                if group.gpu_model == gpu_model:
                    return group
            raise TunerError(
                f"{self.spec.describe()} has no worker with a {gpu_model} (it has {models})"
            )
        if len(groups) > 1:
            raise TunerError(
                f"{self.spec.describe()} has workers of {len(groups)} GPU models ({models}): "
                "a profile is for one; --per-gpu-model runs one study for each"
            )
        return groups[0]

    def close(self) -> None:
        # A lost scheduler has been said in one line already; its reconnection attempts,
        # logged as tracebacks while the client closes, add nothing.
        for name in [n for n in logging.root.manager.loggerDict if n.startswith("distributed")]:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        with contextlib.suppress(Exception):
            self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


@contextlib.contextmanager
def open_fleet(spec: FleetSpec, timeout_s: float = 120.0) -> Iterator[Fleet]:
    """Starts or reaches the fleet `spec` names, waits for its workers, and closes what it
    started on leaving."""
    import dask
    from distributed import Client

    dask.config.set(
        {
            # Scheduler-side: a trial whose worker died runs once more, then is a crashed trial.
            "distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
            # A worker starts a trial process of its own, which a daemon process may not.
            "distributed.worker.daemon": False,
        }
    )
    cluster = None
    try:
        if spec.scheduler:
            client = Client(spec.scheduler, timeout=timeout_s)
        else:
            cluster = _start_cluster(spec)
            client = Client(cluster)
            client.wait_for_workers(1 if spec.cluster != "local" else spec.workers or 1, timeout_s)
    except OSError as exc:
        if cluster is not None:
            cluster.close()
        raise TunerError(f"cannot reach {spec.describe()}: {exc}") from None
    except TimeoutError:
        if cluster is not None:
            cluster.close()
        raise TunerError(f"{spec.describe()}: no worker joined within {timeout_s:.0f} s") from None
    fleet = Fleet(spec, client, cluster)
    try:
        yield fleet
    finally:
        fleet.close()


def _start_cluster(spec: FleetSpec) -> Any:
    workers = spec.workers or 1
    if spec.cluster != "local":
        try:
            import dask_jobqueue
        except ImportError:
            raise TunerError(
                f"--cluster {spec.cluster} needs dask-jobqueue: pip install 'tuner[jobqueue]'"
            ) from None

        cls = getattr(dask_jobqueue, _JOBQUEUE[spec.cluster])
        try:
            cluster = _job_cluster(cls, spec.gpus_per_worker)
        except ValueError as exc:  # dask-jobqueue's answer to a job it cannot describe
            from tuner.execution.worker import one_line

            raise TunerError(
                f"--cluster {spec.cluster}: dask-jobqueue cannot describe the worker job "
                f"({one_line(exc)}); set jobqueue.{spec.cluster} in Dask's jobqueue.yaml"
            ) from None
        cluster.scale(jobs=workers)
        return cluster
    if detect_hardware().gpus:
        return _local_gpu_cluster(workers, spec.gpus_per_worker)
    from distributed import LocalCluster

    # Dask starts workers with one BLAS/OpenMP thread; trials on a CPU share its cores instead.
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        resources={RESOURCE: 1},
        env={"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads},
        dashboard_address=None,
        silence_logs=logging.CRITICAL,
    )


def _job_cluster(cls: Any, gpus_per_worker: int) -> Any:
    """A dask-jobqueue cluster of single-process worker jobs, each offering its GPUs."""
    return cls(
        processes=1,
        job_script_prologue=["export DASK_DISTRIBUTED__WORKER__DAEMON=False"],
        worker_extra_args=[
            "--nthreads",
            "1",
            "--resources",
            f"{RESOURCE}={gpus_per_worker}",
        ],
    )


def _local_gpu_cluster(workers: int, gpus_per_worker: int) -> Any:
    """One worker per GPU through dask-cuda, or per `gpus_per_worker` GPUs (each worker's
    `CUDA_VISIBLE_DEVICES` its own slice)."""
    gpus = [str(g.index) for g in detect_hardware().gpus]
    if workers * gpus_per_worker > len(gpus):
        raise TunerError(
            f"{workers} workers x {gpus_per_worker} GPUs need {workers * gpus_per_worker} GPUs; "
            f"this machine has {len(gpus)}"
        )
    if gpus_per_worker == 1:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise TunerError(
                "one Dask worker per GPU needs dask-cuda: pip install 'tuner[fleet]'"
            ) from None
        return LocalCUDACluster(
            CUDA_VISIBLE_DEVICES=",".join(gpus[:workers]),
            threads_per_worker=1,
            resources={RESOURCE: 1},
            dashboard_address=None,
            silence_logs=logging.CRITICAL,
        )
    from distributed import Nanny, Scheduler, SpecCluster

    specs = {
        f"gpus-{i}": {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "resources": {RESOURCE: gpus_per_worker},
                "env": {
                    "CUDA_VISIBLE_DEVICES": ",".join(
                        gpus[i * gpus_per_worker : (i + 1) * gpus_per_worker]
                    )
                },
            },
        }
        for i in range(workers)
    }
    return SpecCluster(
        workers=specs, scheduler={"cls": Scheduler, "options": {"dashboard_address": None}}
    )
