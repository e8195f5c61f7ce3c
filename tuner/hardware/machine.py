"""What this machine has: GPU identity for profiles, and platform facts for knob catalogues."""

from __future__ import annotations

import importlib.util
import os
import platform as _platform
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

from tuner.errors import NvmlError
from tuner.hardware import nvml

#: Requirements a catalogue may name, besides `module:<python module>`.
FEATURES = frozenset({"cuda", "cpu", "bf16", "fp16", "multi_gpu"})


def slugify(text: str) -> str:
    """Lower-case, dash-separated form of a name, safe in file paths."""
    slug = re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")
    return slug or "unnamed"


@dataclass(frozen=True)
class Hardware:
    """The machine's GPUs (as NVML sees them) and its CPU and memory."""

    gpus: tuple[nvml.GpuInfo, ...]
    driver_version: str | None
    cuda_version: str | None
    no_gpu_reason: str | None
    cpu_model: str
    cpu_cores: int
    memory_mib: int

    @property
    def gpu_name(self) -> str:
        """The GPU model, or "cpu" when there is none."""
        return self.gpus[0].name if self.gpus else "cpu"

    @property
    def slug(self) -> str:
        """Stable folder name for this machine's profiles, e.g. `nvidia-h100-80gb-hbm3`."""
        return slugify(self.gpu_name)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return _platform.processor() or _platform.machine()


def _memory_mib() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    except (ValueError, OSError):
        return 0


@cache
def detect_hardware() -> Hardware:
    """Reads the machine once per process; NVML failures mean "no GPU", with the reason kept."""
    gpus: tuple[nvml.GpuInfo, ...] = ()
    driver = cuda = reason = None
    try:
        inv = nvml.inventory()
        gpus, driver, cuda = inv.gpus, inv.driver_version, inv.cuda_version
        if not gpus:
            reason = "NVML sees no visible GPU"
    except NvmlError as exc:
        reason = str(exc)
    return Hardware(
        gpus=gpus,
        driver_version=driver,
        cuda_version=cuda,
        no_gpu_reason=reason,
        cpu_model=_cpu_model(),
        cpu_cores=os.cpu_count() or 1,
        memory_mib=_memory_mib(),
    )


@dataclass(frozen=True)
class Platform:
    """Facts a knob catalogue's `requires` lists are checked against."""

    device: str
    gpu_count: int
    features: frozenset[str] = field(default_factory=frozenset)

    def satisfies(self, requirement: str) -> bool:
        """Whether one requirement (`cuda`, `bf16`, `module:flash_attn`, ...) holds here."""
        return requirement in self.features


def _torch_has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.version.cuda is not None


def detect_platform(modules: Iterable[str] = ()) -> Platform:
    """Platform facts of this machine; `modules` are the Python modules a catalogue asks about."""
    hardware = detect_hardware()
    features = {f"module:{m}" for m in modules if importlib.util.find_spec(m) is not None}
    if hardware.gpus and _torch_has_cuda():
        capabilities = [tuple(map(int, g.compute_capability.split("."))) for g in hardware.gpus]
        features.add("cuda")
        if all(c >= (8, 0) for c in capabilities):
            features.add("bf16")
        if all(c >= (6, 0) for c in capabilities):
            features.add("fp16")
        if len(hardware.gpus) > 1:
            features.add("multi_gpu")
        return Platform("cuda", len(hardware.gpus), frozenset(features))
    # PyTorch computes in bf16 and fp16 on any x86 or Arm CPU; whether it pays is for the search.
    features |= {"cpu", "bf16", "fp16"}
    return Platform("cpu", 0, frozenset(features))
