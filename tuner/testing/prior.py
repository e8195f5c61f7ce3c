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
