"""Dask doubles: workers that report another GPU model, a worker lost mid-trial."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping
from typing import Any

from tuner.specs.knobs import Value
from tuner.testing.engines import surface_result
from tuner.testing.gpu import fake_hardware


def fake_machines(gpu_models: Mapping[str, str]) -> Any:
    """A Dask worker plugin: the worker named `n` reports a machine with one GPU of model
    `gpu_models[n]` (`fake_hardware`) as the one it runs on
    (`tuner.execution.fleet.worker_machine`); workers not named report their own.
    `client.register_plugin(fake_machines({...}))`."""
    from distributed import WorkerPlugin

    from tuner.execution.fleet import WorkerMachine, tell_machine
    from tuner.hardware.machine import Platform

    class FakeMachines(WorkerPlugin):
        name = "tuner-fake-machines"

        def setup(self, worker: Any) -> None:
            model = gpu_models.get(str(worker.name))
            if model is not None:
                platform = Platform("cuda", 1, frozenset({"cuda", "bf16", "fp16"}))
                tell_machine(worker, WorkerMachine(fake_hardware(model), platform, ("0",), "fake"))

    return FakeMachines()


class SurfaceOnWorker:
    """`evaluate(number, origin, knobs)`: `surface_result` after `delay_s` of sleep, except
    that trial `kill_at` kills the process it runs in (a Dask worker) with SIGKILL, each time
    it runs. For testing trials side by side and a worker lost mid-trial."""

    def __init__(self, delay_s: float = 0.0, kill_at: int | None = None) -> None:
        self.delay_s = delay_s
        self.kill_at = kill_at

    def __call__(self, number: int, origin: str, knobs: dict[str, Value]) -> Any:
        if number == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(self.delay_s)
        return surface_result(number, origin, knobs)
