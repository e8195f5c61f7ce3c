"""A study: SMAC3 ask/tell over an engine's knobs, one isolated trial at a time.

The engine's default configuration is measured first as the baseline. Every finished trial is
appended to `trials.jsonl` in the run directory before SMAC hears of it, so an interrupted study
resumes without repeating finished trials: they are told to a fresh optimizer, in order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from tuner import rundir
from tuner.engines import engine_class
from tuner.errors import TunerError
from tuner.knobs import Value
from tuner.measure import Protocol as MeasureProtocol
from tuner.objective import objective
from tuner.optimizers import Optimizer, make_optimizer
from tuner.profiles import machine_record
from tuner.rundir import TRIALS_FILE, StudySpec, read_spec, read_trials
from tuner.setup import Setup, prepare
from tuner.space import SearchSpace
from tuner.trial import TrialResult
from tuner.worker import Worker

#: Consecutive proposals of already-measured configurations after which the space counts as spent.
MAX_REPEATED_PROPOSALS = 50


class Observer(Protocol):
    """Hears what a study does (the CLI draws it; tests record it)."""

    def trial_started(self, number: int, origin: str, knobs: dict[str, Value]) -> None: ...

    def trial_progress(self, number: int, text: str) -> None: ...

    def trial_finished(self, result: TrialResult, best: TrialResult | None) -> None: ...


Evaluate = Callable[[int, str, dict[str, Value]], TrialResult]


class NullObserver:
    """Observes nothing."""

    def trial_started(self, number: int, origin: str, knobs: dict[str, Value]) -> None:
        pass

    def trial_progress(self, number: int, text: str) -> None:
        pass

    def trial_finished(self, result: TrialResult, best: TrialResult | None) -> None:
        pass


@dataclass
class StudyOutcome:
    """Where a study ended."""

    results: list[TrialResult]
    best: TrialResult | None
    baseline: TrialResult | None
    stopped: str
    resumed: int = 0
    versions: dict[str, str] = field(default_factory=dict)


class Study:
    """One tuning run in one run directory."""

    def __init__(self, spec: StudySpec, setup: Setup, run_dir: Path) -> None:
        self.spec = spec
        self.setup = setup
        self.run_dir = run_dir
        self.trials_path = run_dir / TRIALS_FILE
        self.objective = objective(spec.objective)

    @classmethod
    def create(cls, spec: StudySpec, run_dir: Path, setup: Setup | None = None) -> Study:
        """Starts a new study in `run_dir`, which must not hold one already. `setup`, when
        given, is `prepare` of the spec's engine, model, workload and pinned knobs."""
        rundir.check_new(run_dir)
        setup = setup or prepare(
            spec.engine, spec.model, spec.workload, spec.pinned, options=spec.engine_options
        )
        rundir.create(run_dir, spec, machine_record(setup.hardware).model_dump_json(indent=2))
        return cls(spec, setup, run_dir)

    @classmethod
    def resume(
        cls, run_dir: Path, *, trials: int | None = None, time_budget_s: float | None = None
    ) -> Study:
        """Reopens the study in `run_dir`. A budget given here replaces the stored ones: `trials`
        alone sets the trial budget and lifts the time budget (the user named the budget in
        trials), `time_budget_s` sets the time budget (counted over all sessions' trials)."""
        spec = read_spec(run_dir)
        if trials is not None or time_budget_s is not None:
            update: dict[str, Any] = {"time_budget_s": time_budget_s}
            if trials is not None:
                update["trials"] = trials
            spec = spec.model_copy(update=update)
            rundir.write_spec(run_dir, spec)
        setup = prepare(
            spec.engine, spec.model, spec.workload, spec.pinned, options=spec.engine_options
        )
        return cls(spec, setup, run_dir)

    def _best(self, results: Sequence[TrialResult]) -> TrialResult | None:
        return self.objective.best(results, self.spec.protocol.max_cv)

    # -- the loop --------------------------------------------------------------------------------

    def _budget_left(self, results: Sequence[TrialResult], started: float) -> bool:
        if self.spec.trials is not None and len(results) >= self.spec.trials:
            return False
        if self.spec.time_budget_s is not None:
            spent = sum(r.wall_s for r in results if r.started_at.timestamp() < started)
            if spent + (time.time() - started) >= self.spec.time_budget_s:
                return False
        return True

    def _optimizer(self) -> Optimizer:
        return make_optimizer(
            self.spec.optimizer,
            self.setup.space,
            budget=self.spec.trials or 40,
            seed=self.spec.seed,
            output_dir=self.run_dir / "optimizer",
            starts=self.setup.space.initial_knobs(),
        )

    def run(
        self, observer: Observer | None = None, *, evaluate: Evaluate | None = None
    ) -> StudyOutcome:
        """Runs trials until the budget is spent; returns every finished trial.

        `evaluate(number, origin, knobs)` replaces measuring in a worker process (benchmarks of
        the search itself use it with a known surface).
        """
        observer = observer or NullObserver()
        answerer = getattr(engine_class(self.spec.engine), "answerer", None)
        if evaluate is None and answerer is not None:
            evaluate = answerer(self.spec.seed)
        space = self.setup.space
        results = read_trials(self.trials_path)
        resumed = len(results)
        started = time.time()
        measured: dict[str, TrialResult] = {}
        optimizer = self._optimizer() if space.knobs else None

        def record(result: TrialResult, handle: Any = None, asked: bool = False) -> None:
            measured[_key(result.knobs)] = result
            if optimizer is None:
                return
            if asked:
                optimizer.tell(handle, self.objective.loss(result))
                return
            # Knobs the engine chose itself (the baseline's) are told as it reported them.
            reported = {
                n: v
                for n, v in result.engine_config.items()
                if n in space.knobs and _fits(space, n, v)
            }
            optimizer.observe({**reported, **result.knobs}, self.objective.loss(result))

        def trial(origin: str, knobs: dict[str, Value], handle: Any, asked: bool) -> None:
            number = len(results)
            if evaluate is None:
                result = run_trial(
                    worker,
                    self.setup,
                    number,
                    origin,
                    knobs,
                    self.spec.protocol,
                    self.spec.timeout_s(),
                    observer,
                    self.run_dir,
                )
            else:
                observer.trial_started(number, origin, knobs)
                result = evaluate(number, origin, knobs)
            rundir.append_trial(self.trials_path, result)
            results.append(result)
            record(result, handle, asked)
            observer.trial_finished(result, self._best(results))

        for result in results:
            try:
                record(result)
            except (TunerError, ValueError) as exc:  # knobs this platform does not offer
                raise TunerError(
                    f"{self.trials_path}: trial {result.number} does not fit this machine's "
                    f"search space ({exc}); resume on the machine that started the study"
                ) from None
        worker = Worker(self.run_dir / "workers")
        stopped = "budget spent"
        try:
            has_baseline = any(r.origin == "baseline" for r in results)
            if not has_baseline and self._budget_left(results, started):
                trial("baseline", space.default_knobs(), None, asked=False)
            repeats = 0
            while self._budget_left(results, started):
                if optimizer is None:
                    stopped = "nothing to search: every knob is fixed"
                    break
                proposal = optimizer.ask()
                knobs = proposal.knobs
                known = measured.get(_key(knobs))
                if known is not None or space.violated(knobs) is not None:
                    # Measured already, or a combination the engine rejects: no trial is run.
                    optimizer.tell(proposal.handle, self.objective.loss(known) if known else None)
                    repeats += 1
                    if repeats >= MAX_REPEATED_PROPOSALS:
                        stopped = "search space exhausted"
                        break
                    continue
                repeats = 0
                trial(proposal.origin, knobs, proposal.handle, asked=True)
        finally:
            worker.close()
        baseline = next((r for r in results if r.origin == "baseline"), None)
        versions = next((r.versions for r in reversed(results) if r.versions), {})
        return StudyOutcome(results, self._best(results), baseline, stopped, resumed, versions)


def run_trial(
    worker: Worker,
    setup: Setup,
    number: int,
    origin: str,
    knobs: dict[str, Value],
    protocol: MeasureProtocol,
    timeout_s: float,
    observer: Observer,
    run_dir: Path | None = None,
) -> TrialResult:
    """Measures one configuration in `worker` and records everything about it."""
    observer.trial_started(number, origin, knobs)
    started_at = datetime.now(UTC)
    start = time.monotonic()
    outcome = worker.run(
        setup.task(knobs, protocol),
        timeout_s,
        progress=lambda text: observer.trial_progress(number, text),
    )
    log = outcome.log
    if log is not None and run_dir is not None and Path(log).is_relative_to(run_dir):
        log = str(Path(log).relative_to(run_dir))
    return TrialResult(
        number=number,
        origin=origin,
        knobs=knobs,
        status=outcome.status,
        reason=outcome.reason,
        measurement=outcome.measurement,
        load_s=outcome.load_s,
        reused_model=outcome.reused_model,
        wall_s=time.monotonic() - start,
        started_at=started_at,
        log=log,
        versions=outcome.versions,
        engine_config=outcome.engine_config,
    )


def bench(
    setup: Setup,
    knobs: dict[str, Value],
    protocol: MeasureProtocol,
    timeout_s: float,
    log_dir: Path,
    observer: Observer | None = None,
) -> TrialResult:
    """Measures one configuration (`tuner bench`) in a worker of its own."""
    worker = Worker(log_dir)
    try:
        result = run_trial(
            worker, setup, 0, "bench", knobs, protocol, timeout_s, observer or NullObserver()
        )
    finally:
        worker.close()
    return result


def _fits(space: SearchSpace, name: str, value: Value) -> bool:
    try:
        space.knobs[name].check(value)
    except TunerError:
        return False
    return True


def _key(knobs: dict[str, Value]) -> str:
    return json.dumps(knobs, sort_keys=True)
