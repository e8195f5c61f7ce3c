"""Plausibility of GPU telemetry on a real GPU (run on the H100 machine; skipped elsewhere)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tuner.execution.worker import Worker
from tuner.hardware.nvml import open_devices
from tuner.hardware.telemetry import Sampler
from tuner.measure.measurement import MeasurementProtocol
from tuner.measure.trial import TrialTask
from tuner.specs.workloads import Tokenizer, build_requests, load_workload

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def busy(seconds: float) -> None:
    """Keeps GPU 0 busy with bf16 matrix products for about `seconds`."""
    import torch

    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(20):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()


def test_counter_and_integrated_energy_agree_and_load_draws_more_than_idle() -> None:
    devices = open_devices([0])
    sampler = Sampler(devices, period_s=0.02)
    try:
        time.sleep(3)  # let the last test's load settle
        sampler.start()
        time.sleep(3)
        idle = sampler.stop()
        busy(2)  # reach a steady load before the window opens
        sampler.start()
        busy(8)
        load = sampler.stop()
    finally:
        for device in devices:
            device.close()
    g = load.gpus[0]
    assert g.counter_energy_j is not None and g.integrated_energy_j is not None
    assert abs(g.counter_energy_j - g.integrated_energy_j) / g.counter_energy_j < 0.10, g
    assert idle.avg_power_w is not None and load.avg_power_w is not None
    assert idle.avg_power_w < load.avg_power_w, (idle.avg_power_w, load.avg_power_w)
    assert g.samples > 100 and g.sm_clock_mhz_mean and g.mean_utilization_pct


def test_a_trial_reports_memory_above_the_models_weights_and_energy(tmp_path: Path) -> None:
    from tuner.models import resolve_model

    model = resolve_model("synthetic:llama-1b")
    weights_mib = sum(f.stat().st_size for f in model.path.glob("*.safetensors")) / 2**20
    spec = load_workload("humaneval", requests=32, output_tokens=64)
    requests = tuple(build_requests(spec, Tokenizer(model.path)))
    task = TrialTask(
        "hf",
        str(model.path),
        {"dtype": "bfloat16"},
        {"batch_size": 16},
        requests,
        MeasurementProtocol(run_time_limit_s=60, warmup_time_limit_s=120),
    )
    worker = Worker(tmp_path)
    try:
        outcome = worker.run(task, timeout_s=900)
    finally:
        worker.close()
    assert outcome.status == "ok", outcome.reason
    m = outcome.measurement
    assert m is not None and m.energy is not None, m and m.energy_note
    assert m.energy.peak_memory_mib is not None and m.energy.peak_memory_mib > weights_mib
    assert 0 < m.energy.joules_per_output_token.median < 100
    assert m.energy.energy_source == "counter"
