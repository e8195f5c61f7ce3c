"""GPU telemetry arithmetic on scripted fake GPUs (no GPU needed)."""

from __future__ import annotations

import itertools

import pytest

from tuner.hardware.telemetry import Sampler, integrate
from tuner.measure.measurement import MeasurementProtocol, measure
from tuner.specs.workloads import Request
from tuner.testing import FakeClock, FakeGpu, ScriptedEngine

REQUESTS = [Request((1, 2, 3, 4), 10, "p")] * 5  # 50 output tokens a run


def window(gpus: list[FakeGpu], clock: FakeClock, steps: list[float]):  # type: ignore[no-untyped-def]
    """Starts a hand-driven sampler, samples after each clock step, and stops."""
    sampler = Sampler(gpus, clock=clock, background=False)
    sampler.start()
    for step in steps[:-1]:
        clock.advance(step)
        sampler.sample()
    clock.advance(steps[-1])
    return sampler.stop()


def test_energy_comes_from_the_counter_delta() -> None:
    clock = FakeClock()
    gpu = FakeGpu(energy_j=itertools.count(5_000.0, 250.0), power_w=[240, 260, 250, 250])
    t = window([gpu], clock, [0.5, 0.5])
    g = t.gpus[0]
    assert g.energy_source == "counter" and g.counter_energy_j == 250.0 and g.energy_j == 250.0
    assert t.window_s == 1.0 and t.avg_power_w == 250.0
    assert g.integrated_energy_j == pytest.approx(0.5 * (240 + 260) / 2 + 0.5 * (260 + 250) / 2)
    assert g.peak_power_w == 260 and g.samples == 3
    assert g.note is None


def test_a_sampled_peak_below_the_counters_average_is_noted() -> None:
    # NVML's power reading lags: in a short window the counter's average can exceed every sample.
    clock = FakeClock()
    gpu = FakeGpu(energy_j=[0.0, 240.0], power_w=[150, 200, 210])
    g = window([gpu], clock, [0.25, 0.25]).gpus[0]
    assert g.avg_power_w == 480.0 and g.peak_power_w == 210
    assert "power readings lag this 0.50 s window" in (g.note or "")


def test_integrated_power_stands_in_without_a_counter() -> None:
    clock = FakeClock()
    gpu = FakeGpu(energy_j=None, power_w=[100, 200, 300])
    t = window([gpu], clock, [1.0, 1.0])
    g = t.gpus[0]
    assert g.energy_source == "integrated_power" and g.counter_energy_j is None
    assert g.energy_j == pytest.approx(150 + 250)
    assert "no energy counter" in (g.note or "")
    assert integrate([0, 1], [100]) is None or integrate([0, 1], [100]) == 0
    assert integrate([0], [100]) is None


def test_a_counter_that_goes_backwards_falls_back_to_integration() -> None:
    clock = FakeClock()
    gpu = FakeGpu(energy_j=[9_000.0, 10.0], power_w=[100, 100, 100])
    g = window([gpu], clock, [1.0, 1.0]).gpus[0]
    assert g.energy_source == "integrated_power" and g.energy_j == pytest.approx(200)
    assert "went backwards" in (g.note or "")


def test_a_gpu_that_disappears_yields_no_energy_and_no_exception() -> None:
    clock = FakeClock()
    gpu = FakeGpu(energy_j=itertools.count(0.0, 10.0), lost_after=10)
    t = window([gpu], clock, [0.1, 0.1, 0.1, 0.1])
    g = t.gpus[0]
    assert g.energy_j is None and t.energy_j is None and t.avg_power_w is None
    assert "GPU lost during the window" in (g.note or "")


def test_unsupported_readings_are_none_and_asked_once() -> None:
    clock = FakeClock()
    gpu = FakeGpu(energy_j=itertools.count(0.0, 1.0), unsupported={"temperature_c"})
    g = window([gpu], clock, [0.1] * 5).gpus[0]
    assert g.max_temperature_c is None
    assert g.sm_clock_mhz_mean == 1980.0 and g.mean_utilization_pct == 95.0
    assert g.peak_memory_mib == 20_000.0
    # 6 samples of 6 readings, minus 5 temperature calls skipped after the first refusal, + 2
    # energy readings.
    assert gpu.reads == 6 * 6 - 5 + 2


def test_throttle_reasons_are_decoded_and_flagged() -> None:
    clock = FakeClock()
    gpu = FakeGpu(energy_j=itertools.count(), clock_event_reasons=[0, 0x4, 0x1])
    g = window([gpu], clock, [0.1, 0.1]).gpus[0]
    assert g.clock_event_reasons == ["gpu_idle", "sw_power_cap"] and g.throttled
    idle = FakeGpu(energy_j=itertools.count(), clock_event_reasons=[0x1, 0x1, 0x10])
    g = window([idle], FakeClock(), [0.1, 0.1]).gpus[0]
    assert g.clock_event_reasons == ["gpu_idle", "sync_boost"] and not g.throttled


def test_several_gpus_give_per_gpu_figures_and_their_sum() -> None:
    clock = FakeClock()
    a = FakeGpu(
        0,
        energy_j=itertools.count(0.0, 100.0),
        power_w=[100, 300, 100],
        memory_used_mib=[1000, 5000, 2000],
    )
    b = FakeGpu(
        1,
        energy_j=itertools.count(0.0, 50.0),
        power_w=[300, 100, 100],
        memory_used_mib=[3000, 3000, 3000],
    )
    t = window([a, b], clock, [1.0, 1.0])
    assert [g.energy_j for g in t.gpus] == [100.0, 50.0]
    assert t.energy_j == 150.0 and t.avg_power_w == 75.0
    assert t.peak_power_w == 400  # the peak of the summed samples, not the sum of peaks (600)
    assert t.peak_memory_mib == 5000 + 3000


def test_measure_gives_joules_per_token_and_tokens_per_watt() -> None:
    clock = FakeClock()
    # Each run: 2 s and 100 J from the counter, 50 tokens -> 2 J/token, 0.5 tok/s per W.
    gpu = FakeGpu(energy_j=itertools.count(0.0, 100.0), power_w=itertools.repeat(50.0))
    sampler = Sampler([gpu], clock=clock, background=False)
    engine = ScriptedEngine(clock, [2.0] * 4, tokens_per_request=10)
    m = measure(engine, REQUESTS, {}, MeasurementProtocol(), clock=clock, sampler=sampler)
    assert m.energy is not None
    assert m.energy.joules_per_output_token.median == pytest.approx(2.0)
    assert m.energy.output_tokens_per_s_per_w.median == pytest.approx(0.5)
    assert m.energy.avg_power_w.median == pytest.approx(50.0)
    assert m.energy.peak_power_w == 50.0 and m.energy.peak_memory_mib == 20_000.0
    assert m.energy.energy_source == "counter"
    assert m.output_tokens_per_s.median == pytest.approx(25.0)
    assert m.cold.telemetry is not None and all(r.telemetry for r in m.runs)
    assert m.stable and not m.throttled and m.remeasured == 0


def test_without_telemetry_energy_is_none_with_a_reason() -> None:
    clock = FakeClock()
    m = measure(
        ScriptedEngine(clock, [1.0] * 4, 10), REQUESTS, {}, MeasurementProtocol(), clock=clock
    )
    assert m.energy is None and m.energy_note == "no GPU telemetry"


def test_spread_past_max_cv_is_remeasured_up_to_the_limit() -> None:
    clock = FakeClock()
    # Cold, then 1 s, 2 s, 4 s (cv far above 5%), then a steady set.
    engine = ScriptedEngine(clock, [5, 1, 2, 4, 1, 1, 1], tokens_per_request=10)
    m = measure(engine, REQUESTS, {}, MeasurementProtocol(max_remeasures=1), clock=clock)
    assert m.remeasured == 1 and len(m.runs) == 6
    assert m.output_tokens_per_s.median == 50.0  # over all six runs
    assert not m.stable  # the spread it carries is still above max_cv

    clock = FakeClock()
    engine = ScriptedEngine(clock, [5, 1, 2, 4, 1, 1, 1, 1, 1, 1], tokens_per_request=10)
    m = measure(
        engine, REQUESTS, {}, MeasurementProtocol(max_remeasures=2, max_cv=0.9), clock=clock
    )
    assert m.remeasured == 0 and len(m.runs) == 3 and m.stable

    clock = FakeClock()
    steady = ScriptedEngine(clock, [5, 1, 1, 1], tokens_per_request=10)
    m = measure(steady, REQUESTS, {}, MeasurementProtocol(max_remeasures=5), clock=clock)
    assert m.remeasured == 0 and m.output_tokens_per_s.cv == 0.0


def test_a_throttled_measurement_is_flagged_and_remeasured() -> None:
    clock = FakeClock()
    gpu = FakeGpu(energy_j=itertools.count(0.0, 10.0), clock_event_reasons=itertools.repeat(0x40))
    sampler = Sampler([gpu], clock=clock, background=False)
    engine = ScriptedEngine(clock, [1.0] * 7, tokens_per_request=10)
    m = measure(
        engine, REQUESTS, {}, MeasurementProtocol(max_remeasures=1), clock=clock, sampler=sampler
    )
    assert m.throttled and m.remeasured == 1 and not m.stable
    assert m.runs[0].telemetry is not None
    assert m.runs[0].telemetry.gpus[0].clock_event_reasons == ["hw_thermal_slowdown"]


def test_background_sampling_takes_samples_on_its_own() -> None:
    import time

    gpu = FakeGpu(energy_j=itertools.count(0.0, 1.0))
    sampler = Sampler([gpu], period_s=0.01)
    sampler.start()
    time.sleep(0.2)
    t = sampler.stop()
    assert t.gpus[0].samples >= 5  # start, stop, and the thread's samples between


def test_the_series_sums_gpus_over_time_and_marks_failed_readings() -> None:
    clock = FakeClock()
    a = FakeGpu(energy_j=None, power_w=[100, 200, float("nan")], memory_used_mib=[1000] * 3)
    b = FakeGpu(energy_j=None, power_w=[50, 50, 50], memory_used_mib=[500, 600, 700])
    s = window([a, b], clock, [0.5, 0.5]).series
    assert s is not None
    assert s.t_s == [0.0, 0.5, 1.0]
    assert s.power_w == [150.0, 250.0, None]
    assert s.memory_mib == [1500.0, 1600.0, 1700.0]


def test_a_long_window_is_thinned_to_its_first_and_last_samples_and_evenly_between() -> None:
    clock = FakeClock()
    gpu = FakeGpu(energy_j=None, power_w=itertools.count(0.0, 1.0))
    s = window([gpu], clock, [0.01] * 999).series
    assert s is not None and len(s.t_s) == 100
    assert s.t_s[0] == 0.0 and s.t_s[-1] == pytest.approx(9.99)
    assert s.power_w[0] == 0.0 and s.power_w[-1] == 999.0
    gaps = {round(b - a, 4) for a, b in zip(s.t_s, s.t_s[1:], strict=False)}
    assert gaps <= {0.1, 0.11}
