"""A GPU whose NVML readings follow scripts, and a machine that has it."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import ClassVar

from tuner.errors import GpuLost, NvmlNotSupported
from tuner.hardware.machine import Hardware
from tuner.hardware.nvml import GpuInfo


class FakeGpu:
    """A GPU whose readings come from scripts: each call of a reading takes its next value.

    `energy_j=None` means the board has no energy counter. After `lost_after` readings of any
    kind, every call fails as if the GPU fell off the bus. Readings named in `unsupported` fail
    as NVML's NOT_SUPPORTED.
    """

    #: Each reading's value where its script is not given.
    STEADY: ClassVar[dict[str, float]] = {
        "power_w": 300.0,
        "memory_used_mib": 20_000.0,
        "sm_clock_mhz": 1980.0,
        "temperature_c": 60.0,
        "utilization_pct": 95.0,
        "clock_event_reasons": 0,
    }

    def __init__(
        self,
        index: int = 0,
        *,
        energy_j: Iterable[float] | None = None,
        lost_after: int | None = None,
        unsupported: Iterable[str] = (),
        **readings: Iterable[float],
    ) -> None:
        """`readings`: a script per reading named in `STEADY` (power_w=[...], ...)."""
        unknown = set(readings) - set(self.STEADY)
        assert not unknown, f"FakeGpu has no reading {unknown}"
        self.index = index
        self.uuid = f"GPU-fake-{index}"
        self._scripts: dict[str, Iterator[float]] = {
            name: iter(readings.get(name) or itertools.repeat(steady))
            for name, steady in self.STEADY.items()
        }
        self._unsupported = set(unsupported)
        if energy_j is None:
            self._unsupported.add("energy_j")
        else:
            self._scripts["energy_j"] = iter(energy_j)
        self._lost_after = lost_after
        self.reads = 0
        self.closed = False

    def _next(self, name: str) -> float:
        self.reads += 1
        if self._lost_after is not None and self.reads > self._lost_after:
            raise GpuLost("NVML error 15: GPU is lost")
        if name in self._unsupported:
            raise NvmlNotSupported("NVML error 3: Not Supported")
        return next(self._scripts[name])

    def power_w(self) -> float:
        return self._next("power_w")

    def energy_j(self) -> float:
        return self._next("energy_j")

    def memory_used_mib(self) -> float:
        return self._next("memory_used_mib")

    def sm_clock_mhz(self) -> float:
        return self._next("sm_clock_mhz")

    def temperature_c(self) -> float:
        return self._next("temperature_c")

    def utilization_pct(self) -> float:
        return self._next("utilization_pct")

    def clock_event_reasons(self) -> int:
        return int(self._next("clock_event_reasons"))

    def close(self) -> None:
        self.closed = True


def fake_hardware(
    name: str | None = "NVIDIA H100 80GB HBM3",
    memory_mib: int = 81_559,
    compute_capability: str = "9.0",
    count: int = 1,
) -> Hardware:
    """A machine with `count` GPUs of one model (name None: a machine without a GPU)."""
    gpus = tuple(
        GpuInfo(i, str(name), f"GPU-fake-{i}", memory_mib, compute_capability, 700.0)
        for i in range(count if name else 0)
    )
    return Hardware(
        gpus=gpus,
        driver_version="580.0" if gpus else None,
        cuda_version="13.0" if gpus else None,
        no_gpu_reason=None if gpus else "no GPU (fake)",
        cpu_model="fake CPU",
        cpu_cores=2,
        memory_mib=24_000,
    )
