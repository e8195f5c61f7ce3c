"""GPU telemetry beside a measured run: energy, power, memory, clocks and throttling.

A `Sampler` reads each GPU of a trial every `period_s` on a thread of its own while a run goes.
Energy is the board's energy counter over the window; where the counter is missing or misbehaves
(it went backwards), power integrated over the samples stands in, and both figures are kept when
both exist. Telemetry never fails a trial: what cannot be read is `None` with a reason.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

from tuner.errors import GpuLost, NvmlError, NvmlNotSupported
from tuner.hardware.nvml import is_throttled, reason_names

DEFAULT_PERIOD_S = 0.05
#: Points kept of a window's power and memory over time (a longer window is thinned evenly).
SERIES_POINTS = 100
READINGS = (
    "power_w",
    "memory_used_mib",
    "sm_clock_mhz",
    "temperature_c",
    "utilization_pct",
    "clock_event_reasons",
)


class GpuDevice(Protocol):
    """What the sampler reads from a GPU (`tuner.hardware.nvml.NvmlDevice`, or a fake)."""

    index: int
    uuid: str

    def power_w(self) -> float: ...
    def energy_j(self) -> float: ...
    def memory_used_mib(self) -> float: ...
    def sm_clock_mhz(self) -> float: ...
    def temperature_c(self) -> float: ...
    def utilization_pct(self) -> float: ...
    def clock_event_reasons(self) -> int: ...
    def close(self) -> None: ...


#: Where a window's energy figure comes from: the GPU's energy counter, or its power integrated.
EnergySource = Literal["counter", "integrated_power"]


class GpuWindow(BaseModel):
    """One GPU over one window."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    index: int
    uuid: str
    energy_j: float | None
    energy_source: EnergySource | None
    counter_energy_j: float | None
    integrated_energy_j: float | None
    avg_power_w: float | None
    peak_power_w: float | None
    peak_memory_mib: float | None
    sm_clock_mhz_mean: float | None
    sm_clock_mhz_min: float | None
    max_temperature_c: float | None
    mean_utilization_pct: float | None
    clock_event_reasons: list[str]
    throttled: bool
    samples: int
    note: str | None = None


class Series(BaseModel):
    """Power and memory of all GPUs together over one window, for plots; None marks a failed
    reading. `t_s` counts from the window's start."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    t_s: list[float]
    power_w: list[float | None]
    memory_mib: list[float | None]


class Telemetry(BaseModel):
    """All GPUs of a trial over one window: per-GPU figures and their sums."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    window_s: float
    gpus: list[GpuWindow]
    energy_j: float | None
    avg_power_w: float | None
    peak_power_w: float | None
    peak_memory_mib: float | None
    throttled: bool
    series: Series | None = None


@dataclass
class _Track:
    """Samples of one GPU, and which of its readings still work."""

    device: GpuDevice
    times: list[float] = field(default_factory=list)
    values: dict[str, list[float]] = field(default_factory=lambda: {r: [] for r in READINGS})
    unsupported: set[str] = field(default_factory=set)
    energy_start: float | None = None
    energy_end: float | None = None
    lost: str | None = None
    errors: list[str] = field(default_factory=list)


def _read(track: _Track, name: str) -> float | None:
    if name in track.unsupported or track.lost:
        return None
    try:
        return float(getattr(track.device, name)())
    except NvmlNotSupported:
        track.unsupported.add(name)
    except GpuLost as exc:
        track.lost = str(exc)
    except NvmlError as exc:
        track.errors.append(f"{name}: {exc}")
    return None


def integrate(times: Sequence[float], power_w: Sequence[float]) -> float | None:
    """Energy in joules from power samples, by the trapezoidal rule."""
    if len(times) < 2:
        return None
    return sum(
        (t1 - t0) * (p0 + p1) / 2
        for t0, t1, p0, p1 in zip(times, times[1:], power_w, power_w[1:], strict=False)
    )


def _energy(
    track: _Track, notes: list[str]
) -> tuple[float | None, EnergySource | None, float | None, float | None]:
    """A GPU's energy over the window, where it comes from ("counter" or
    "integrated_power"), and the counter's and the integrated power's figures; what was
    amiss is added to `notes`."""
    powers = track.values["power_w"]
    times = [t for t, p in zip(track.times, powers, strict=True) if p == p]
    powers = [p for p in powers if p == p]  # NaN marks a failed reading
    counter = None
    if track.energy_start is not None and track.energy_end is not None:
        counter = track.energy_end - track.energy_start
        if counter < 0:
            notes.append("energy counter went backwards; used integrated power")
            counter = None
    elif "energy_j" in track.unsupported:
        notes.append("no energy counter on this GPU; used integrated power")
    integrated = integrate(times, powers)
    if track.lost:
        notes.append(f"GPU lost during the window: {track.lost}")
        return None, None, None, None
    if counter is not None:
        return counter, "counter", counter, integrated
    return integrated, "integrated_power" if integrated is not None else None, None, integrated


def summarize_gpu(track: _Track, window_s: float) -> GpuWindow:
    """Figures of one GPU from its samples and energy counter readings."""
    powers = [p for p in track.values["power_w"] if p == p]  # NaN marks a failed reading
    notes: list[str] = []
    energy, source, counter, integrated = _energy(track, notes)
    if track.errors:
        notes.append(f"{len(track.errors)} readings failed, first: {track.errors[0]}")

    def clean(name: str) -> list[float]:
        return [v for v in track.values[name] if v == v]

    clocks, memory = clean("sm_clock_mhz"), clean("memory_used_mib")
    temps, utils = clean("temperature_c"), clean("utilization_pct")
    avg_power = energy / window_s if energy is not None and window_s > 0 else None
    peak_power = max(powers) if powers and not track.lost else None
    if avg_power is not None and peak_power is not None and avg_power > peak_power:
        # Seen on the H100 in 0.5 s runs: NVML's power reading is averaged over about a
        # second, so it lags a short window that the energy counter measures exactly.
        notes.append(
            f"power readings lag this {window_s:.2f} s window: the sampled peak "
            f"({peak_power:.0f} W) is below the average from energy ({avg_power:.0f} W)"
        )
    mask = 0
    for value in clean("clock_event_reasons"):
        mask |= int(value)
    return GpuWindow(
        index=track.device.index,
        uuid=track.device.uuid,
        energy_j=energy,
        energy_source=source if energy is not None else None,
        counter_energy_j=counter,
        integrated_energy_j=integrated,
        avg_power_w=avg_power,
        peak_power_w=peak_power,
        peak_memory_mib=max(memory) if memory else None,
        sm_clock_mhz_mean=sum(clocks) / len(clocks) if clocks else None,
        sm_clock_mhz_min=min(clocks) if clocks else None,
        max_temperature_c=max(temps) if temps else None,
        mean_utilization_pct=sum(utils) / len(utils) if utils else None,
        clock_event_reasons=reason_names(mask),
        throttled=is_throttled(mask),
        samples=len(track.times),
        note="; ".join(notes) or None,
    )


def series_of(tracks: Sequence[_Track], start_s: float, points: int = SERIES_POINTS) -> Series:
    """Summed power and memory of the tracks over time, thinned evenly to at most `points`."""
    count = min((len(t.times) for t in tracks), default=0)
    if count <= points:
        keep = list(range(count))
    else:
        keep = sorted({round(i * (count - 1) / (points - 1)) for i in range(points)})

    def summed(name: str, i: int) -> float | None:
        values = [t.values[name][i] for t in tracks]
        return None if any(v != v for v in values) else round(sum(values), 1)

    return Series(
        t_s=[round(tracks[0].times[i] - start_s, 4) for i in keep],
        power_w=[summed("power_w", i) for i in keep],
        memory_mib=[summed("memory_used_mib", i) for i in keep],
    )


def combine(
    gpus: list[GpuWindow],
    summed_power: list[float],
    window_s: float,
    series: Series | None = None,
) -> Telemetry:
    """A trial's figures: per-GPU windows and their sums (None if any GPU lacks the figure)."""

    def total(values: list[float | None]) -> float | None:
        return None if not values or any(v is None for v in values) else sum(values)  # type: ignore[arg-type]

    energy = total([g.energy_j for g in gpus])
    peaks = total([g.peak_power_w for g in gpus])
    return Telemetry(
        window_s=window_s,
        gpus=gpus,
        energy_j=energy,
        avg_power_w=energy / window_s if energy is not None and window_s > 0 else None,
        peak_power_w=max(summed_power) if summed_power and peaks is not None else None,
        peak_memory_mib=total([g.peak_memory_mib for g in gpus]),
        throttled=any(g.throttled for g in gpus),
        series=series,
    )


class Sampler:
    """Samples GPUs over a window: `start()`, the run, `stop()`.

    With `background=False` nothing samples by itself and `sample()` is called by hand (tests
    drive a fake clock that way).
    """

    def __init__(
        self,
        gpus: Sequence[GpuDevice],
        *,
        period_s: float = DEFAULT_PERIOD_S,
        clock: Callable[[], float] = time.perf_counter,
        background: bool = True,
    ) -> None:
        if period_s <= 0:
            raise ValueError("period_s must be positive")
        self.gpus = list(gpus)
        self.period_s = period_s
        self.clock = clock
        self.background = background
        self._tracks: list[_Track] = []
        self._summed_power: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start_s = 0.0

    def sample(self) -> None:
        """Reads every GPU once, at one instant of the clock."""
        now = self.clock()
        summed = 0.0
        for track in self._tracks:
            track.times.append(now)
            for name in READINGS:
                value = _read(track, name)
                track.values[name].append(float("nan") if value is None else value)
                if name == "power_w" and value is not None:
                    summed += value
        self._summed_power.append(summed)

    def _loop(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample()

    def start(self) -> None:
        self._tracks = [_Track(g) for g in self.gpus]
        self._summed_power = []
        self._stop.clear()
        for track in self._tracks:
            track.energy_start = _read(track, "energy_j")
            if track.energy_start is None and not track.lost:
                track.unsupported.add("energy_j")
        self._start_s = self.clock()
        self.sample()
        if self.background:
            self._thread = threading.Thread(target=self._loop, name="tuner-sampler", daemon=True)
            self._thread.start()

    def stop(self) -> Telemetry:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self.sample()
        window_s = self.clock() - self._start_s
        for track in self._tracks:
            track.energy_end = _read(track, "energy_j")
        gpus = [summarize_gpu(track, window_s) for track in self._tracks]
        series = series_of(self._tracks, self._start_s) if self._tracks else None
        return combine(gpus, self._summed_power, window_s, series)
