"""Capacity: how many copies of a configuration serve a request rate within the limits.

A server trial runs its requests with a number in flight (the client's concurrency, or the
engine's `max_num_seqs`) and records the requests it completed per second; its latencies are
those of that load. So one replica of the configuration sustains that rate (or the highest rate
a rate search found within the limits, `Measurement.max_request_rate`) while keeping the
latencies the trial kept, and `ceil(rate / sustained)` replicas serve `rate`. An offline
measurement has no latencies under load and says nothing of a rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tuner.errors import TunerError
from tuner.fmt import fmt_knobs
from tuner.measure.measurement import Measurement
from tuner.measure.trial import TrialResult
from tuner.profiles.profile import Profile, TrialRecord
from tuner.specs.knobs import gpus_of


@dataclass(frozen=True)
class Capacity:
    """Replicas of one configuration for a request rate."""

    rate: float
    per_replica: float
    gpus_per_replica: int
    replicas: int
    knobs: dict

    @property
    def gpus(self) -> int:
        return self.replicas * self.gpus_per_replica

    def text(self, limits: Sequence[str], unit: str = "GPU") -> str:
        """`20 requests/s within itl_p99_ms<=10: 4 GPUs = 2 replicas x 2 GPUs, each ...`"""

        def count(n: int, word: str) -> str:
            return f"{n} {word}{'s' if n > 1 else ''}"

        within = f" within {', '.join(limits)}" if limits else ""
        return (
            f"{self.rate:g} requests/s{within}: {count(self.gpus, unit)} = "
            f"{count(self.replicas, 'replica')} x {count(self.gpus_per_replica, unit)}, each "
            f"sustaining {self.per_replica:.3g} requests/s ({fmt_knobs(self.knobs)})"
        )

    def as_json(self) -> dict:
        return {
            "rate": self.rate,
            "per_replica": self.per_replica,
            "gpus_per_replica": self.gpus_per_replica,
            "replicas": self.replicas,
            "gpus": self.gpus,
            "knobs": self.knobs,
        }


def sustained(measurement: Measurement | None) -> float | None:
    """Requests per second one replica sustained at the measured latencies: the rate search's
    highest within the limits where there was one, else the completed requests per second;
    None for a measurement with no latencies (offline)."""
    if measurement is None or measurement.latency is None:
        return None
    if measurement.max_request_rate is not None:
        return measurement.max_request_rate
    return measurement.requests_per_s.median or None


def capacity_of(rate: float, result: TrialResult | TrialRecord) -> Capacity | None:
    """The replicas of a trial's configuration (as a study or a profile keeps it) that serve
    `rate`; None where its measurement states no sustained rate."""
    per = sustained(result.measurement)
    if per is None or result.measurement is None:
        return None
    gpus = max(result.measurement.cold.gpus, gpus_of(result.knobs))
    return Capacity(rate, per, gpus, math.ceil(rate / per - 1e-9), dict(result.knobs))


def fewest_gpus(rate: float, candidates: Sequence[TrialResult]) -> Capacity:
    """Of configurations that keep the limits, the one that serves `rate` on the fewest GPUs
    (then the most spare rate); one line where none states a sustained rate."""
    found = [c for r in candidates if (c := capacity_of(rate, r)) is not None]
    if not found:
        raise TunerError(
            "no configuration states a rate it sustains within the limits: capacity needs a "
            "server engine's measurements (latencies under load)"
        )
    return min(found, key=lambda c: (c.gpus, -(c.replicas * c.per_replica - rate)))


def capacity_for(rate: float, profile: Profile, path: Path) -> Capacity:
    """The replicas of a profile's best configuration that serve `rate`; one line when its
    best trial states no rate it sustains."""
    needed = capacity_of(check_rate(rate), profile.best)
    if needed is None:
        raise TunerError(
            f"{path}: its best trial states no rate it sustains (no latencies under "
            "load): capacity needs a server engine's profile"
        )
    return needed


def check_rate(rate: float) -> float:
    if not math.isfinite(rate) or rate <= 0:
        raise TunerError(f"--rate {rate:g}: give the requests per second to serve, above 0")
    return rate
