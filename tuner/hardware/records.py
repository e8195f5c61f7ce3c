"""The machine a study ran on, as a record: kept as `machine.json` in a run directory and as a
profile's `gpu` and `host` (`Machine`, `machine_record`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from tuner.hardware.machine import Hardware


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class GpuRecord(_Record):
    """The GPU model the profile was measured on; `slug` is "cpu" when there was none."""

    slug: str
    name: str
    count: int
    memory_mib: int | None = None
    compute_capability: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    no_gpu_reason: str | None = None


class HostRecord(_Record):
    cpu: str
    cores: int
    memory_mib: int


class Machine(_Record):
    """The machine a study ran on, kept as `machine.json` in its run directory."""

    schema_version: Literal[1] = 1
    gpu: GpuRecord
    host: HostRecord


def gpu_record(hardware: Hardware) -> GpuRecord:
    if not hardware.gpus:
        return GpuRecord(slug="cpu", name="cpu", count=0, no_gpu_reason=hardware.no_gpu_reason)
    first = hardware.gpus[0]
    return GpuRecord(
        slug=hardware.slug,
        name=first.name,
        count=len(hardware.gpus),
        memory_mib=first.memory_mib,
        compute_capability=first.compute_capability,
        driver_version=hardware.driver_version,
        cuda_version=hardware.cuda_version,
    )


def host_record(hardware: Hardware) -> HostRecord:
    return HostRecord(
        cpu=hardware.cpu_model, cores=hardware.cpu_cores, memory_mib=hardware.memory_mib
    )


def machine_record(hardware: Hardware) -> Machine:
    return Machine(gpu=gpu_record(hardware), host=host_record(hardware))
