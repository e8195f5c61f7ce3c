"""A prior over the fake surface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tuner.specs.knobs import Value
from tuner.testing.engines import surface


class FakePrior:
    """A prior over the fake surface's knobs that predicts `surface` (out of memory where it
    has no figure), its batch sizes off by `error` (a fraction), or says nothing of knobs
    in `unknown`."""

    label = "fake prior"
    covers = frozenset({"batch_size", "kernel"})

    def __init__(self, error: float = 0.0, unknown: Sequence[Mapping[str, Value]] = ()) -> None:
        self.error, self.unknown, self.asked = error, list(unknown), 0

    def predict(self, knobs: Mapping[str, Value]) -> Any:
        from tuner.measure.measurement import Measurement
        from tuner.measure.trial import Prediction

        self.asked += 1
        if any(all(knobs.get(k) == v for k, v in u.items()) for u in self.unknown):
            return None
        rate = surface(knobs)
        if rate is None:
            return Prediction(by=self.label, status="oom", reason="predicted out of memory")
        run = _run(rate * (1 + self.error))
        return Prediction(by=self.label, status="ok", measurement=Measurement.from_runs(run, [run]))


def _run(output_tokens_per_s: float) -> Any:
    from tuner.measure.measurement import Run

    return Run(
        elapsed_s=1.0,
        requests=8,
        input_tokens=64,
        output_tokens=max(1, round(output_tokens_per_s)),
        truncated=False,
    )


class BiasedPrior:
    """A prior that predicts a recorded table's own measurements off by known factors: output
    tok/s x `throughput` x (load / 16) ** `load_slope` (the load: `load`'s value), TTFT x
    `ttft`, time per output token x `tpot`; for testing that calibration learns them."""

    label = "biased prior"

    def __init__(
        self,
        points: Sequence[Any],
        covers: Sequence[str],
        *,
        throughput: float = 1.0,
        ttft: float = 1.0,
        tpot: float = 1.0,
        load: str = "concurrency",
        load_slope: float = 0.0,
    ) -> None:
        self.covers = frozenset(covers)
        self.factors = {"throughput": throughput, "ttft": ttft, "tpot": tpot}
        self.load, self.load_slope = load, load_slope
        self._points = {self._key(p.knobs): p for p in points if p.status == "ok"}

    def _key(self, knobs: Mapping[str, Value]) -> tuple[Any, ...]:
        return tuple(sorted((n, v) for n, v in knobs.items() if n in self.covers))

    def predict(self, knobs: Mapping[str, Value]) -> Any:
        from tuner.measure.trial import Prediction
        from tuner.predict.calibrate import scaled_measurement

        point = self._points.get(self._key(knobs))
        if point is None or point.measurement is None:
            return None
        load = float(knobs.get(self.load, 16))  # type: ignore[arg-type]
        factors = dict(self.factors)
        factors["throughput"] *= (load / 16) ** self.load_slope
        measurement = scaled_measurement(point.measurement, factors)
        return Prediction(by=self.label, status="ok", measurement=measurement)
