"""Shared fixtures. Nothing here downloads: models are synthesized into a per-session cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tuner.hardware import Platform
from tuner.testing import fake_model_dir

CPU = Platform("cpu", 0, frozenset({"cpu", "bf16", "fp16"}))
FOUR_GPUS = Platform(
    "cuda", 4, frozenset({"cuda", "bf16", "fp16", "multi_gpu", "module:flash_attn"})
)


@pytest.fixture(scope="session", autouse=True)
def tuner_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic models are built once per test session, in a folder of the session's own,
    unless TUNER_CACHE names one already (to reuse builds across sessions)."""
    if "TUNER_CACHE" in os.environ:
        return Path(os.environ["TUNER_CACHE"])
    path = tmp_path_factory.mktemp("tuner-cache")
    os.environ["TUNER_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def fake_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A weightless model folder: enough to tokenize workloads for the fake engines."""
    return fake_model_dir(tmp_path_factory.mktemp("fake-model"))


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    """The synthetic tiny Llama, built on first use (real weights file, random values)."""
    from tuner.models import resolve_model

    return resolve_model("synthetic:tiny-llama").path


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests run only where NVML sees a GPU."""
    from tuner.hardware import detect_hardware

    hardware = detect_hardware()
    if hardware.gpus:
        return
    skip = pytest.mark.skip(reason=f"no GPU ({hardware.no_gpu_reason})")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
