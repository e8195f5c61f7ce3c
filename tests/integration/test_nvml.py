"""The NVML boundary module, with pynvml patched (only here): errors, units, visibility."""

from __future__ import annotations

import types
from typing import Any

import pynvml
import pytest

from tuner.errors import GpuLost, NvmlError, NvmlNotSupported, NvmlUnavailable
from tuner.hardware import nvml


class FakeNvml(types.SimpleNamespace):
    """Just enough of pynvml: two GPUs; calls listed in `fail` raise the given error code."""

    NVMLError = pynvml.NVMLError

    def __init__(self, fail: dict[str, int] | None = None) -> None:
        consts = {k: getattr(pynvml, k) for k in dir(pynvml) if k.startswith("NVML_")}
        super().__init__(**consts)
        self.fail = fail or {}
        self.inits = 0

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            raise pynvml.NVMLError(self.fail[name])

    def nvmlInit(self) -> None:
        self._maybe_fail("nvmlInit")
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.inits -= 1

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return f"GPU-{h}aaa"

    def nvmlDeviceGetName(self, h: int) -> str:
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetMemoryInfo(self, h: int) -> Any:
        return types.SimpleNamespace(total=80 * 2**30, used=3 * 2**30)

    def nvmlDeviceGetCudaComputeCapability(self, h: int) -> tuple[int, int]:
        return 9, 0

    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int:
        return 700_000

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 13000

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.159.04"

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        self._maybe_fail("power")
        return 312_500

    def nvmlDeviceGetTotalEnergyConsumption(self, h: int) -> int:
        self._maybe_fail("energy")
        return 1_234_567

    def nvmlDeviceGetClockInfo(self, h: int, kind: int) -> int:
        return 1980

    def nvmlDeviceGetTemperature(self, h: int, kind: int) -> int:
        return 61

    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any:
        return types.SimpleNamespace(gpu=97)

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: int) -> int:
        return 0x4


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    def install(**fail: int) -> FakeNvml:
        instance = FakeNvml(fail)
        monkeypatch.setattr(nvml, "_pynvml", lambda: instance)
        return instance

    return install


def test_inventory_converts_units(fake, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    lib = fake()
    inv = nvml.inventory()
    assert len(inv.gpus) == 2 and lib.inits == 0
    gpu = inv.gpus[0]
    assert (gpu.memory_mib, gpu.compute_capability, gpu.power_limit_w) == (81920, "9.0", 700.0)
    assert (inv.driver_version, inv.cuda_version) == ("580.159.04", "13.0")


def test_cuda_visible_devices_is_respected(fake, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    fake()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [g.index for g in nvml.inventory().gpus] == [1]
    assert nvml.nvml_indices([0]) == [1]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-0")
    assert [g.index for g in nvml.inventory().gpus] == [0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert nvml.inventory().gpus == ()


def test_device_readings_in_tuners_units(fake) -> None:  # type: ignore[no-untyped-def]
    fake()
    device = nvml.NvmlDevice(0)
    assert device.power_w() == 312.5
    assert device.energy_j() == pytest.approx(1234.567)
    assert device.memory_used_mib() == 3072
    assert (device.sm_clock_mhz(), device.temperature_c(), device.utilization_pct()) == (
        1980,
        61,
        97,
    )
    assert device.clock_event_reasons() == 0x4
    device.close()


def test_error_codes_become_the_projects_exceptions(fake) -> None:  # type: ignore[no-untyped-def]
    fake(energy=pynvml.NVML_ERROR_NOT_SUPPORTED, power=pynvml.NVML_ERROR_GPU_IS_LOST)
    device = nvml.NvmlDevice(0)
    with pytest.raises(NvmlNotSupported):
        device.energy_j()
    with pytest.raises(GpuLost):
        device.power_w()
    fake(nvmlInit=pynvml.NVML_ERROR_LIBRARY_NOT_FOUND)
    with pytest.raises(NvmlUnavailable, match="NVML could not start"):
        nvml.inventory()
    with pytest.raises(NvmlUnavailable):
        nvml.NvmlDevice(0)
    assert isinstance(
        nvml.translate(pynvml, pynvml.NVMLError(pynvml.NVML_ERROR_UNKNOWN)), NvmlError
    )


def test_reason_names() -> None:
    assert nvml.reason_names(0x1 | 0x4 | 0x40) == [
        "gpu_idle",
        "sw_power_cap",
        "hw_thermal_slowdown",
    ]
    assert nvml.is_throttled(0x80) and not nvml.is_throttled(0x1 | 0x2 | 0x10)
