"""The machine a study runs on, and what its GPUs draw while a trial runs.

- `machine`: the host and its GPUs (`Hardware`, `detect_hardware`), and what this platform can
  run (`Platform`, `detect_platform`);
- `records`: the machine as a record, kept in run directories and profiles (`Machine`,
  `machine_record`);
- `nvml`: NVML, behind one error type per way it fails (`inventory`, `open_devices`);
- `telemetry`: a background `Sampler` of power, energy, memory, clocks and throttling during a
  measurement, summarized as `Telemetry`.

The bottom layer: it imports nothing else of tuner's but its errors.
"""

from tuner.hardware.machine import Hardware, Platform, detect_hardware, detect_platform, slugify
from tuner.hardware.nvml import GpuInfo, NvmlDevice, inventory, open_devices
from tuner.hardware.records import Machine, machine_record
from tuner.hardware.telemetry import Sampler, Telemetry

__all__ = [
    "GpuInfo",
    "Hardware",
    "Machine",
    "NvmlDevice",
    "Platform",
    "Sampler",
    "Telemetry",
    "detect_hardware",
    "detect_platform",
    "inventory",
    "machine_record",
    "open_devices",
    "slugify",
]
