"""The one module that talks to NVML (NVIDIA's management library, through `nvidia-ml-py`).

NVML error codes become the project's own exceptions here, and units are converted here, once:
NVML reports memory in bytes and power in milliwatts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from tuner.errors import NvmlError, NvmlUnavailable


@dataclass(frozen=True)
class GpuInfo:
    """Identity of one GPU as NVML reports it."""

    index: int
    name: str
    uuid: str
    memory_mib: int
    compute_capability: str
    power_limit_w: float | None


@dataclass(frozen=True)
class GpuInventory:
    """The GPUs this process may use (after `CUDA_VISIBLE_DEVICES`) and the driver serving them."""

    gpus: tuple[GpuInfo, ...]
    driver_version: str
    cuda_version: str


def _pynvml() -> Any:
    try:
        import pynvml
    except ImportError as exc:  # nvidia-ml-py is a dependency, but keep the failure readable
        raise NvmlUnavailable("the nvidia-ml-py package is not installed") from exc
    return pynvml


@contextmanager
def _session() -> Iterator[Any]:
    nvml = _pynvml()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML could not start: {exc}") from None
    try:
        yield nvml
    except nvml.NVMLError as exc:
        raise NvmlError(f"NVML error {exc.value}: {exc}") from None
    finally:
        with suppress(nvml.NVMLError):
            nvml.nvmlShutdown()


def _visible(count: int, uuids: list[str]) -> list[int]:
    """Indices that CUDA_VISIBLE_DEVICES leaves visible (indices or UUID prefixes)."""
    raw = os.environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return list(range(count))
    chosen: list[int] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            break
        if item.isdigit():
            index = int(item)
            if index >= count:
                break
        else:
            matches = [i for i, uuid in enumerate(uuids) if uuid.startswith(item)]
            if len(matches) != 1:
                break
            index = matches[0]
        if index in chosen:
            break
        chosen.append(index)
    return chosen


def inventory() -> GpuInventory:
    """Lists the visible GPUs.

    Raises:
        NvmlUnavailable: NVML cannot start (no driver or library).
        NvmlError: NVML failed while answering.
    """
    with _session() as nvml:
        count = nvml.nvmlDeviceGetCount()
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        uuids = [nvml.nvmlDeviceGetUUID(h) for h in handles]
        gpus = []
        for index in _visible(count, uuids):
            handle = handles[index]
            major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
            try:
                power_limit_w: float | None = nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000
            except nvml.NVMLError:
                power_limit_w = None
            gpus.append(
                GpuInfo(
                    index=index,
                    name=nvml.nvmlDeviceGetName(handle),
                    uuid=uuids[index],
                    memory_mib=nvml.nvmlDeviceGetMemoryInfo(handle).total // 2**20,
                    compute_capability=f"{major}.{minor}",
                    power_limit_w=power_limit_w,
                )
            )
        cuda = nvml.nvmlSystemGetCudaDriverVersion()
        return GpuInventory(
            gpus=tuple(gpus),
            driver_version=nvml.nvmlSystemGetDriverVersion(),
            cuda_version=f"{cuda // 1000}.{cuda % 1000 // 10}",
        )
