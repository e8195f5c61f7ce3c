"""The objective: what counts, what wins."""

from __future__ import annotations

import pytest

from tuner.errors import TunerError
from tuner.objective import THROUGHPUT, objective
from tuner.testing import surface_result


def ok(number: int, batch: int, *, cv: float = 0.01):  # type: ignore[no-untyped-def]
    knobs = {"batch_size": batch, "kernel": "fused", "cache": "static"}
    r = surface_result(number, "search", knobs)
    assert r.measurement is not None
    rate = r.measurement.output_tokens_per_s.model_copy(update={"cv": cv})
    m = r.measurement.model_copy(update={"output_tokens_per_s": rate, "throttled": True})
    return r.model_copy(update={"measurement": m})


def test_a_spread_trial_wins_only_by_more_than_its_spread() -> None:
    # A 26% spread (seen in a study) no longer wins over a steady trial 4% slower; throttling
    # alone counts for nothing.
    slow, fast_but_spread, fast = ok(0, 1), ok(1, 64, cv=0.26), ok(2, 32)
    assert THROUGHPUT.value(fast_but_spread) > THROUGHPUT.value(fast)  # type: ignore[operator]
    assert THROUGHPUT.best([slow, fast_but_spread, fast]) == fast
    # ... but it does over a steady trial far slower (a noisy CPU: most trials spread).
    assert THROUGHPUT.best([slow, fast_but_spread]) == fast_but_spread
    # A table's optimum is its best score, however it spread.
    assert THROUGHPUT.best([slow, fast_but_spread, fast], robust=False) == fast_but_spread


def test_failed_trials_are_infeasible_with_their_reason() -> None:
    oom = surface_result(3, "search", {"batch_size": 256, "kernel": "basic", "cache": "static"})
    assert oom.status == "oom"
    assert THROUGHPUT.feasible(oom) == "oom: fake engine: does not fit"
    assert THROUGHPUT.score(oom) is None and THROUGHPUT.loss(oom) is None
    good = ok(0, 32)
    assert THROUGHPUT.feasible(good) is None
    assert THROUGHPUT.loss(good) == -THROUGHPUT.score(good)  # type: ignore[operator]
    assert THROUGHPUT.best([oom]) is None


def test_objectives_are_named() -> None:
    assert objective("output_tokens_per_s") is THROUGHPUT
    with pytest.raises(TunerError, match="unknown objective 'speed'; known: output_tokens_per_s"):
        objective("speed")
