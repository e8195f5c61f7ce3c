"""The SMAC loop against the fake engine of tuner.testing, with real worker processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tuner.errors import TunerError
from tuner.execution.executor import NullObserver
from tuner.measure.measurement import MeasurementProtocol
from tuner.measure.objective import THROUGHPUT
from tuner.measure.trial import TrialResult
from tuner.specs.workloads import load_workload
from tuner.study.rundir import StudySpec, read_trials
from tuner.study.study import Study
from tuner.testing import peak, surface

FAKE = "tuner.testing:FakeEngine"


def spec(model: Path, **kw: object) -> StudySpec:
    base: dict[str, object] = {
        "engine": FAKE,
        "model": str(model),
        "workload": load_workload("synthetic", requests=16, output_tokens=8),
        "trials": 10,
        "confirm": 0,
        "seed": 0,
        "protocol": MeasurementProtocol(repeats=3, run_time_limit_s=5, warmup_time_limit_s=5),
    }
    base.update(kw)
    return StudySpec.model_validate(base)


class Recorder(NullObserver):
    def __init__(self, stop_after: int | None = None) -> None:
        self.started: list[int] = []
        self.finished: list[TrialResult] = []
        self.stop_after = stop_after

    def trial_started(self, number, origin, knobs):  # type: ignore[no-untyped-def]
        self.started.append(number)

    def trial_progress(self, number, text):  # type: ignore[no-untyped-def]
        pass

    def trial_finished(self, result, best):  # type: ignore[no-untyped-def]
        self.finished.append(result)
        if self.stop_after is not None and len(self.finished) >= self.stop_after:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_search_lands_near_the_peak_and_records_oom_trials(
    fake_model: Path, tmp_path: Path
) -> None:
    study = Study.create(spec(fake_model, trials=30, seed=0), tmp_path / "run")
    outcome = study.run()
    results = outcome.results
    assert len(results) == 30
    assert results[0].origin == "baseline"
    assert results[0].knobs == {"batch_size": 1, "kernel": "basic", "cache": "dynamic"}
    # Every trial's status follows the surface: its OOM region is recorded as oom.
    for r in results:
        assert r.status == ("oom" if surface(r.knobs) is None else "ok"), r
    assert any(r.status == "oom" for r in results)
    assert all(r.reason and "does not fit" in r.reason for r in results if r.status == "oom")
    # No configuration is measured twice.
    assert len({json.dumps(r.knobs, sort_keys=True) for r in results}) == 30
    peak_knobs, peak_rate = peak()
    assert outcome.best is not None
    best_true = surface(outcome.best.knobs)
    assert best_true is not None and best_true >= 0.9 * peak_rate, (outcome.best.knobs, peak_knobs)
    assert outcome.best.output_tokens_per_s >= results[0].output_tokens_per_s  # type: ignore[operator]
    assert outcome.versions == {"fake": "1.0"}


def test_resume_after_an_interruption_repeats_no_trial(fake_model: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    study = Study.create(spec(fake_model, trials=10), run_dir)
    with pytest.raises(KeyboardInterrupt):
        study.run(Recorder(stop_after=4))
    kept = read_trials(run_dir / "trials.jsonl")
    assert [r.number for r in kept] == [0, 1, 2, 3]

    recorder = Recorder()
    outcome = Study.resume(run_dir).run(recorder)
    assert outcome.resumed == 4
    assert recorder.started == [4, 5, 6, 7, 8, 9]
    assert outcome.results[:4] == kept
    assert [r.number for r in outcome.results] == list(range(10))
    assert sum(r.origin == "baseline" for r in outcome.results) == 1
    assert len({json.dumps(r.knobs, sort_keys=True) for r in outcome.results}) == 10

    # A larger budget continues the same study.
    more = Study.resume(run_dir, trials=12).run()
    assert [r.number for r in more.results] == list(range(12))


def test_a_torn_last_line_is_dropped(fake_model: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    Study.create(spec(fake_model, trials=2), run_dir).run()
    path = run_dir / "trials.jsonl"
    path.write_text(path.read_text() + '{"schema_version": 1, "numb')
    assert len(read_trials(path)) == 2
    lines = path.read_text().splitlines()
    path.write_text("\n".join(["garbage", *lines]) + "\n")
    with pytest.raises(TunerError, match="line 1: not a trial result"):
        read_trials(path)


def test_a_run_directory_holds_one_study(fake_model: Path, tmp_path: Path) -> None:
    Study.create(spec(fake_model, trials=1), tmp_path / "run")
    with pytest.raises(TunerError, match="already holds a study; resume it with --resume"):
        Study.create(spec(fake_model, trials=1), tmp_path / "run")
    with pytest.raises(TunerError, match="holds no study"):
        Study.resume(tmp_path / "elsewhere")


def test_time_budget_stops_the_study(fake_model: Path, tmp_path: Path) -> None:
    study = Study.create(spec(fake_model, trials=None, time_budget_s=2), tmp_path / "run")
    outcome = study.run()
    assert 1 <= len(outcome.results) < 200
    assert outcome.stopped == "budget spent"


def test_resuming_with_more_trials_lifts_a_spent_time_budget(
    fake_model: Path, tmp_path: Path
) -> None:
    # Seen on the H100: a study stopped by --time-budget, resumed with --trials 16, stopped at
    # once ("budget spent"). Trials named on resume are the budget.
    run_dir = tmp_path / "run"
    first = Study.create(spec(fake_model, trials=None, time_budget_s=1), run_dir).run()
    done = len(first.results)
    more = Study.resume(run_dir, trials=done + 2).run()
    assert [r.number for r in more.results] == list(range(done + 2))
    assert more.stopped == "budget spent"
    # A time budget given on resume replaces the stored one (and is counted over all trials).
    again = Study.resume(run_dir, time_budget_s=1).run()
    assert len(again.results) == done + 2


@pytest.mark.slow
def test_crashes_and_hangs_are_data_and_the_study_goes_on(fake_model: Path, tmp_path: Path) -> None:
    # Random search: its proposals do not depend on measured (timing-noisy) rates, so the
    # crashing and hanging regions are reached whatever the machine's load (GP's path varied
    # under load: seen failing while another test run shared the machine).
    crash = Study.create(
        spec(
            fake_model, engine="tuner.testing:CrashingEngine", trials=12, seed=2, optimizer="random"
        ),
        tmp_path / "crash",
    ).run()
    statuses = {r.status for r in crash.results}
    assert "crashed" in statuses and "ok" in statuses
    for r in crash.results:
        if r.knobs["batch_size"] >= 64:
            assert r.status == "crashed" and "SIGKILL" in (r.reason or "")
    hang = Study.create(
        spec(
            fake_model,
            engine="tuner.testing:HangingEngine",
            trials=8,
            seed=2,
            optimizer="random",
            trial_timeout_s=3,
        ),
        tmp_path / "hang",
    ).run()
    assert {r.status for r in hang.results if r.knobs["batch_size"] >= 64} <= {"timeout"}
    assert any(r.status == "timeout" for r in hang.results)
    assert hang.best is not None and hang.best.status == "ok"


def test_pinned_knobs_hold_in_every_trial(fake_model: Path, tmp_path: Path) -> None:
    study = Study.create(spec(fake_model, trials=5, pinned={"kernel": "tiled"}), tmp_path / "r")
    assert all(r.knobs["kernel"] == "tiled" for r in study.run().results)


def test_resume_refuses_trials_from_another_search_space(fake_model: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    Study.create(spec(fake_model, trials=1), run_dir).run()
    path = run_dir / "trials.jsonl"
    path.write_text(path.read_text().replace('"kernel":"basic"', '"kernel":"quantum"'))
    with pytest.raises(TunerError, match="does not fit this machine's search space"):
        Study.resume(run_dir, trials=3).run()


def test_a_study_ends_by_measuring_its_best_configurations_again(
    fake_model: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    outcome = Study.create(spec(fake_model, trials=8, confirm=2), run_dir).run()
    searched, confirmed = outcome.results[:8], outcome.results[8:]
    assert [r.origin for r in confirmed] == ["confirm", "confirm"]
    assert [r.number for r in outcome.results] == list(range(10))
    ok = sorted(
        (r for r in searched if r.status == "ok"),
        key=lambda r: THROUGHPUT.pessimistic(r) or 0.0,
        reverse=True,
    )
    assert [r.knobs for r in confirmed] == [r.knobs for r in ok[:2]]
    # The pick and its figures are the confirmation's, not the search's.
    assert outcome.best in confirmed
    assert read_trials(run_dir / "trials.jsonl")[8:] == confirmed
    # Resumed with the same budget: nothing left to search or to confirm.
    again = Study.resume(run_dir).run()
    assert len(again.results) == 10 and again.best == outcome.best


MARTINEZ_HF = (
    REPO_ROOT / "benchmarks/data/external/martinez2024/martinez2024-a100-hf-pipeline-bloom-1b7.json"
)


def test_an_out_of_memory_trial_is_followed_by_the_next_smaller_batch(tmp_path: Path) -> None:
    from tuner.study.study import BACK_OFF, replay_study

    outcome = replay_study(
        MARTINEZ_HF, trials=30, seed=0, run_dir=tmp_path / "run", optimizer="random", confirm=0
    )
    results = sorted(outcome.results, key=lambda r: r.number)
    ooms = [r for r in results[:-1] if r.status == "oom"]
    assert ooms  # batches of 128 and 256 run out of memory on one GPU, as the paper measured
    for oom in ooms:
        smaller = {**oom.knobs, "batch_size": oom.knobs["batch_size"] // 2}
        before = [r.knobs for r in results if r.number < oom.number]
        following = results[results.index(oom) + 1]
        if smaller not in before:
            assert (following.origin, following.knobs) == (BACK_OFF, smaller)
    assert any(r.origin == BACK_OFF for r in results)
    # Back-offs are trials like any other: counted in the budget, and never repeated.
    assert len(results) == 30
    assert len({json.dumps(r.knobs, sort_keys=True) for r in results}) == len(results)
