"""Calibration: a prior's predictions corrected by measured trials (`tuner.predict.calibrate`),
on a recorded silicon table and a prior that predicts it off by known factors
(`tuner.testing.BiasedPrior`)."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tuner.measure.objective import goal, metric
from tuner.predict.calibrate import Calibrator
from tuner.predict.prior import rank
from tuner.replay.landscape import read_landscape
from tuner.study.study import replay_study
from tuner.testing import BiasedPrior

ROOT = REPO_ROOT
TABLE = (
    ROOT / "benchmarks/data/external/aiconfigurator-silicon"
    / "silicon-h100-qwen-qwen3-32b-default-1024x1024-vllm0.12.0.json"
)  # fmt: skip
FIGURES = ("output_tokens_per_s", "ttft_p99_ms", "itl_p99_ms")


def errors(pairs: list[tuple[float, float]]) -> float:
    return statistics.median(abs(p - m) / m for p, m in pairs)


def test_a_prior_with_a_known_bias_is_corrected_after_three_measured_trials() -> None:
    table = read_landscape(TABLE)
    prior = BiasedPrior(
        table.points, table.grid, throughput=1.5, ttft=0.5, tpot=0.7, load_slope=0.15
    )
    target = goal(["output_tokens_per_s_per_gpu"], [])
    plan = rank(prior, [p.knobs for p in table.points], target).plan(3)
    calibrator = Calibrator(plan, target)
    measured = [
        {"tensor_parallel_size": 2, "concurrency": 8},
        {"tensor_parallel_size": 4, "concurrency": 32},
        {"tensor_parallel_size": 8, "concurrency": 128},
    ]
    for knobs in measured:
        calibrator.add(table.point(knobs))
    held_out = [p for p in table.points if p.status == "ok" and p.knobs not in measured]
    for name in FIGURES:
        figure = metric(name)
        raw = [
            (figure.of(plan.prediction(p.knobs).measurement), figure.of(p.measurement))
            for p in held_out
        ]  # type: ignore[union-attr]
        fixed = [
            (figure.of(calibrator.prediction(p.knobs).measurement), figure.of(p.measurement))
            for p in held_out
        ]  # type: ignore[union-attr]
        assert errors(raw) > 0.25, name  # type: ignore[arg-type]
        assert errors(fixed) < errors(raw) / 4, name  # type: ignore[arg-type]
    said = calibrator.prediction(held_out[0].knobs)
    assert said is not None and "corrected by 3 measured" in said.by


@pytest.mark.parametrize("calibrate", [True, False])
def test_each_start_of_a_calibrated_prior_is_the_best_corrected_configuration(
    calibrate: bool, tmp_path: Path
) -> None:
    """The prior under-predicts the time per output token 2.5x, so its three best all break
    the limit. Corrected by its first measured start, the second is the best that keeps it."""
    table = read_landscape(TABLE)
    prior = BiasedPrior(table.points, table.grid, throughput=1.3, ttft=0.5, tpot=0.4)
    spec = {"objectives": ["output_tokens_per_s_per_gpu"], "constraints": ["itl_p99_ms<=20"]}
    target = goal(spec["objectives"], spec["constraints"])
    plan = rank(prior, [p.knobs for p in table.points], target).plan(3)
    assert all(target.feasible(table.point(s)) for s in plan.starts)  # each breaks the limit
    best = target.best(table.points)
    assert best is not None and best.knobs not in plan.starts

    outcome = replay_study(
        TABLE, run_dir=tmp_path / "run", trials=3, seed=0, confirm=0, prior=plan,
        calibrate=calibrate, **spec,
    )  # fmt: skip
    tried = [r.knobs for r in outcome.results]
    assert tried[0] == plan.starts[0]
    if calibrate:
        assert tried[1] == best.knobs
        assert [r.origin for r in outcome.results][1:] == ["prior", "prior"]
    else:
        assert tried == plan.starts and best.knobs not in tried


def test_a_limit_is_judged_on_its_own_figure_not_the_one_the_correction_is_fitted_on() -> None:
    from tuner.predict.calibrate import Point, figures, keep_probability

    table = read_landscape(TABLE)
    point = table.point({"tensor_parallel_size": 4, "concurrency": 64})
    m = point.measurement
    assert m is not None
    per_gpu = metric("output_tokens_per_s_per_gpu").of(m)
    total = metric("output_tokens_per_s").of(m)
    assert per_gpu is not None and total is not None and total == pytest.approx(4 * per_gpu)
    sure = {name: (0.0, 0.01) for name in ("throughput", "ttft", "tpot")}
    judged = Point(point.knobs, figures(m), measurement=m)
    # A per-GPU floor between the per-GPU and the total figure: broken, whatever the total.
    floor = goal(["output_tokens_per_s_per_gpu"], [f"output_tokens_per_s_per_gpu>={2 * per_gpu}"])
    assert keep_probability(floor, sure, judged) < 0.01
    below = goal(["output_tokens_per_s_per_gpu"], [f"output_tokens_per_s_per_gpu>={per_gpu / 2}"])
    assert keep_probability(below, sure, judged) > 0.99
