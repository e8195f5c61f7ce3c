"""The one module that talks to NVML (NVIDIA's management library, through `nvidia-ml-py`).

NVML error codes become the project's own exceptions here (`NvmlUnavailable`, `NvmlNotSupported`,
`GpuLost`, `NvmlError`), and units are converted here, once: NVML reports memory in bytes, power in
milliwatts and energy in millijoules.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from tuner.errors import GpuLost, NvmlError, NvmlNotSupported, NvmlUnavailable


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


def translate(nvml: Any, exc: Exception) -> NvmlError:
    """The project's exception for an NVML error code."""
    code = getattr(exc, "value", None)
    text = f"NVML error {code}: {exc}"
    if code in (nvml.NVML_ERROR_NOT_SUPPORTED, nvml.NVML_ERROR_FUNCTION_NOT_FOUND):
        return NvmlNotSupported(text)
    if code == nvml.NVML_ERROR_GPU_IS_LOST:
        return GpuLost(text)
    unavailable = (
        nvml.NVML_ERROR_LIBRARY_NOT_FOUND,
        nvml.NVML_ERROR_DRIVER_NOT_LOADED,
        nvml.NVML_ERROR_NO_PERMISSION,
        nvml.NVML_ERROR_UNINITIALIZED,
    )
    if code in unavailable:
        return NvmlUnavailable(text)
    return NvmlError(text)


def _init(nvml: Any) -> None:
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise NvmlUnavailable(f"NVML could not start: {exc}") from None


@contextmanager
def _session() -> Iterator[Any]:
    nvml = _pynvml()
    _init(nvml)
    try:
        yield nvml
    except nvml.NVMLError as exc:
        raise translate(nvml, exc) from None
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


#: Clock-event reasons that mean the GPU was held below the clocks it asked for.
THROTTLE_REASONS = {
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
}
#: Reasons that are reported but are not throttling.
OTHER_REASONS = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x10: "sync_boost",
    0x100: "display_clock_setting",
}


def reason_names(mask: int) -> list[str]:
    """Names of the bits set in a clock-event reason mask."""
    known = {**THROTTLE_REASONS, **OTHER_REASONS}
    return [name for bit, name in sorted(known.items()) if mask & bit]


def is_throttled(mask: int) -> bool:
    return any(mask & bit for bit in THROTTLE_REASONS)


class NvmlDevice:
    """One GPU read through NVML, in the units tuner uses. Every failure is an `NvmlError`."""

    def __init__(self, index: int) -> None:
        self._nvml = _pynvml()
        _init(self._nvml)
        try:
            self._handle = self._call("nvmlDeviceGetHandleByIndex", index)
            self.index = index
            self.uuid: str = self._call("nvmlDeviceGetUUID", self._handle)
        except NvmlError:
            self.close()
            raise

    def _call(self, name: str, *args: Any) -> Any:
        nvml = self._nvml
        try:
            return getattr(nvml, name)(*args)
        except nvml.NVMLError as exc:
            raise translate(nvml, exc) from None

    def power_w(self) -> float:
        return self._call("nvmlDeviceGetPowerUsage", self._handle) / 1000

    def energy_j(self) -> float:
        """The board's energy counter since the driver loaded."""
        return self._call("nvmlDeviceGetTotalEnergyConsumption", self._handle) / 1000

    def memory_used_mib(self) -> float:
        return self._call("nvmlDeviceGetMemoryInfo", self._handle).used / 2**20

    def sm_clock_mhz(self) -> float:
        return float(self._call("nvmlDeviceGetClockInfo", self._handle, self._nvml.NVML_CLOCK_SM))

    def temperature_c(self) -> float:
        return float(
            self._call("nvmlDeviceGetTemperature", self._handle, self._nvml.NVML_TEMPERATURE_GPU)
        )

    def utilization_pct(self) -> float:
        return float(self._call("nvmlDeviceGetUtilizationRates", self._handle).gpu)

    def clock_event_reasons(self) -> int:
        return int(self._call("nvmlDeviceGetCurrentClocksEventReasons", self._handle))

    def close(self) -> None:
        with suppress(self._nvml.NVMLError):
            self._nvml.nvmlShutdown()


def nvml_indices(cuda_ordinals: list[int]) -> list[int]:
    """NVML indices of the GPUs that CUDA numbers 0, 1, ... in this process."""
    with _session() as nvml:
        count = nvml.nvmlDeviceGetCount()
        uuids = [nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
    visible = _visible(count, uuids)
    return [visible[i] for i in cuda_ordinals if i < len(visible)]


def open_devices(cuda_ordinals: list[int]) -> list[NvmlDevice]:
    """NVML handles for the GPUs a trial uses, named by their CUDA ordinals."""
    devices: list[NvmlDevice] = []
    try:
        for index in nvml_indices(cuda_ordinals):
            devices.append(NvmlDevice(index))
    except NvmlError:
        for device in devices:
            device.close()
        raise
    return devices
