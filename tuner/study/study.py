"""A study: an optimizer's proposals measured by an executor, judged by an objective.

The engine's default configuration is measured first as the baseline (where a study has a
prior, right after the prior's best predicted configurations), and the best one or two
configurations are measured again at the end (`confirm`), on fresh repeats. A trial that runs out
of memory is followed by the same configuration one step down on the knobs memory grows with
(`SearchSpace.backed_off`: the next smaller batch), before the optimizer's next proposal. The
study keeps up to the executor's `slots` trials in flight, numbering each at submission; every
finished trial is appended to `trials.jsonl` in the run directory before the optimizer hears of
it, so an interrupted study resumes without repeating finished trials: they are told to a fresh
optimizer, in order.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from tuner.errors import TunerError
from tuner.execution.executor import (
    Evaluate,
    Executor,
    InProcessExecutor,
    LocalExecutor,
    NullObserver,
    Observer,
)
from tuner.execution.fleet import Fleet, WorkerMachine
from tuner.files import os_error
from tuner.hardware.records import machine_record
from tuner.measure.objective import CONFIRM, winner
from tuner.measure.trial import Prediction, TrialResult
from tuner.optimizers import Optimizer, Proposal, SpaceExhausted, make_optimizer
from tuner.optimizers.base import Feedback, Losses
from tuner.optimizers.random import draw
from tuner.predict.calibrate import Calibrator
from tuner.predict.prior import PRIOR_STARTS, Belief
from tuner.replay.replay import REPLAY_PREFIX
from tuner.specs.knobs import Value
from tuner.specs.space import SearchSpace
from tuner.study import rundir
from tuner.study.prepare import Setup, prepare
from tuner.study.prior import workload_shape
from tuner.study.rundir import TRIALS_FILE, StudySpec, read_spec, read_trials

#: The origin of a trial of a warm-start configuration (another GPU model's or profile's best).
WARM_START = "warm-start"
#: The origin of a trial of one of the prior's best predicted configurations (`--prior`).
PRIOR = "prior"
#: The origin of a trial one step below an out-of-memory one (`SearchSpace.backed_off`).
BACK_OFF = "back-off"
#: The origin of a trial the study picks itself, at random among the configurations not yet
#: measured, when the optimizer keeps proposing measured or forbidden ones or has none left.
FILL = "fill"
#: Consecutive proposals of measured or forbidden configurations after which the study fills.
MAX_REPEATED_PROPOSALS = 10
#: Random draws a study makes to find an unmeasured configuration of a space with ranges.
FILL_DRAWS = 1000


@dataclass
class StudyOutcome:
    """Where a study ended."""

    results: list[TrialResult]
    best: TrialResult | None
    baseline: TrialResult | None
    stopped: str
    resumed: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    wall_s: float = 0.0

    @property
    def gpu_s(self) -> float:
        """GPU-seconds the trials took (each trial's seconds, loads included, times its GPUs),
        summed: the GPU time spent, whether the trials ran one after another or side by side."""
        return sum(r.gpu_s for r in self.results)


class Study:
    """One tuning run in one run directory."""

    def __init__(self, spec: StudySpec, setup: Setup, run_dir: Path) -> None:
        self.spec = spec
        self.setup = setup
        self.run_dir = run_dir
        self.trials_path = run_dir / TRIALS_FILE
        self.lock: rundir.RunLock | None = None  # held from create or resume to the run's end
        self.repaired: str | None = None  # what resuming did to a torn trials.jsonl
        #: Benchmarks of the search on a known table: stop once this holds for the results.
        self.until: Callable[[Sequence[TrialResult]], bool] | None = None
        #: The prior's speed-of-light bound for a measured configuration (AIConfigurator's).
        self.speed_of_light: Callable[[dict[str, Value], Prediction], Prediction] | None = None
        self.goal = spec.goal()
        setup.check_goal(self.goal)
        if spec.replay_time_scale and setup.replay is None:
            raise TunerError("--replay-time-scale is for replays (--engine replay:TABLE)")
        if spec.protocol.rate_search and (setup.replay is not None or not setup.reports_latency):
            raise TunerError(
                "--rate-search sends requests at chosen rates: it needs a server engine "
                "(vllm-server, openai-server), not a replay or a batch engine"
            )

    def headline(self, before: int = 0) -> str:
        """What it tunes and where: `engine · model · workload (N requests) · GPU · run dir`,
        and how far an earlier session got."""
        s = self.setup
        return (
            f"{s.catalogue.engine} · {s.model.ref} · {s.workload.name}"
            + (f" ({len(s.requests)} requests)" if s.requests else " (recorded)")
            + f" · {s.hardware.gpu_name} · run dir {self.run_dir}"
            + (f" · resuming after {before} trials" if before else "")
        )

    @classmethod
    def create(cls, spec: StudySpec, run_dir: Path, setup: Setup | None = None) -> Study:
        """Starts a new study in `run_dir`, which must not hold one already. `setup`, when
        given, is `prepare` of the spec's engine, model, workload and pinned knobs."""
        rundir.check_new(run_dir)
        setup = setup or prepare(
            spec.engine, spec.model, spec.workload, spec.pinned, options=spec.engine_options
        )
        study = cls(spec, setup, run_dir)  # checks the goal: a bad one writes nothing
        machine = machine_record(setup.hardware).model_dump_json(indent=2)
        study.lock = rundir.create(run_dir, spec, machine)
        return study

    @classmethod
    def resume(
        cls,
        run_dir: Path,
        *,
        trials: int | None = None,
        time_budget_s: float | None = None,
        machine: WorkerMachine | None = None,
    ) -> Study:
        """Reopens the study in `run_dir`. A budget given here replaces the stored ones: `trials`
        alone sets the trial budget and lifts the time budget (the user named the budget in
        trials), `time_budget_s` sets the time budget (counted over all sessions' trials)."""
        read_spec(run_dir)  # one line where there is no study, before the lock is taken
        lock = rundir.RunLock(run_dir)
        try:
            study = cls._reopen(run_dir, trials, time_budget_s, machine)
        except BaseException:
            lock.release()
            raise
        study.lock = lock
        return study

    @classmethod
    def _reopen(
        cls,
        run_dir: Path,
        trials: int | None,
        time_budget_s: float | None,
        machine: WorkerMachine | None,
    ) -> Study:
        """The study of a locked run directory, its new budgets saved once it is checked."""
        spec = read_spec(run_dir)
        if spec.fleet is not None and machine is None:
            raise TunerError(
                f"{run_dir} ran on {spec.fleet.describe()}: resume it on a fleet (the command "
                "line reopens the one it names)"
            )
        if trials is not None or time_budget_s is not None:
            update: dict[str, Any] = {"time_budget_s": time_budget_s}
            if trials is not None:
                update["trials"] = trials
            spec = spec.model_copy(update=update)
        setup = prepare(
            spec.engine,
            spec.model,
            spec.workload,
            spec.pinned,
            options=spec.engine_options,
            machine=machine,
        )
        study = cls(spec, setup, run_dir)
        if trials is not None or time_budget_s is not None:
            rundir.write_spec(run_dir, spec)
        try:
            study.repaired = rundir.repair_trials(study.trials_path)
        except OSError as exc:
            raise TunerError(f"cannot repair {study.trials_path}: {os_error(exc)}") from None
        return study

    def close(self) -> None:
        """Releases the run directory for another study (the end of `run` does)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    @contextlib.contextmanager
    def _writing(self, results: Sequence[TrialResult]) -> Iterator[None]:
        """Writing the run directory (a trial, the optimizer's state): an OS error, a full
        disk say, stops the study in one line, the finished trials kept."""
        try:
            yield
        except OSError as exc:
            raise TunerError(
                f"cannot write to {self.run_dir}: {os_error(exc)}; the {len(results)} finished "
                f"trials are kept in {TRIALS_FILE}: make room and resume with tuner tune "
                f"--resume {self.run_dir}"
            ) from None

    def _best(self, results: Sequence[TrialResult]) -> TrialResult | None:
        return winner(self.goal, results)

    def _to_confirm(self, results: Sequence[TrialResult]) -> list[dict[str, Value]]:
        """The best `confirm` configurations of the search that have no confirmation yet."""
        tuning = [r for r in results if r.origin != CONFIRM]
        confirmed = {_key(r.knobs) for r in results if r.origin == CONFIRM}
        top: list[dict[str, Value]] = []
        for r in self.goal.ranked(tuning):
            if len(top) == self.spec.confirm:
                break
            if r.knobs not in top:
                top.append(r.knobs)
        return [k for k in top if _key(k) not in confirmed]

    # -- the loop --------------------------------------------------------------------------------

    def _budget_left(
        self, results: Sequence[TrialResult], started: float, in_flight: int = 0
    ) -> bool:
        searched = sum(r.origin != CONFIRM for r in results)
        if self.spec.trials is not None and searched + in_flight >= self.spec.trials:
            return False
        if self.until is not None and self.until(results):
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
            starts=self._starts(),
            objectives=[o.name for o in self.goal.objectives],
            prior=self._belief(),
        )

    def _belief(self) -> Belief | None:
        """The prior as piBO's weight over configurations, where the study asks for it."""
        if self.spec.prior is None or not self.spec.pibo:
            return None
        return Belief(self.spec.prior, self.goal)

    def _starts(self) -> list[dict[str, Value]]:
        """The initial design's fixed points: the catalogue's starting points (warm-start
        configurations are run before the optimizer is asked, see `_run`)."""
        return self.setup.space.initial_knobs()

    def executor(
        self, observer: Observer, evaluate: Evaluate | None = None, fleet: Fleet | None = None
    ) -> Executor:
        """Where this study's trials run: on a Dask fleet's workers (of the study's GPU
        model), or here: in process for a replay or a given `evaluate`, else in a local worker
        process."""
        if evaluate is None and self.setup.replay is not None:
            evaluate = self.setup.replay.evaluator(self.spec.seed, self.spec.replay_time_scale)
        make_task = partial(self.setup.task, protocol=self.spec.protocol)
        if fleet is not None:
            from tuner.execution.dask_executor import DaskExecutor

            model = self.spec.gpu_model
            workers = fleet.group(model).workers if model is not None else None
            return DaskExecutor(
                fleet,
                make_task=None if evaluate else make_task,
                evaluate=evaluate,
                timeout_s=self.spec.timeout_s(),
                log_dir=self.run_dir / "workers",
                observer=observer,
                run_dir=self.run_dir,
                workers=workers,
            )
        if evaluate is not None:
            return InProcessExecutor(evaluate, observer)
        return LocalExecutor(
            make_task, self.spec.timeout_s(), self.run_dir / "workers", observer, self.run_dir
        )

    def run(
        self,
        observer: Observer | None = None,
        *,
        evaluate: Evaluate | None = None,
        fleet: Fleet | None = None,
    ) -> StudyOutcome:
        """Runs trials until the budget is spent; returns every finished trial.

        `evaluate(number, origin, knobs)` answers trials instead of measuring them
        (benchmarks of the search itself use it with a known surface). With a `fleet`, trials
        run on its workers, as many at once as they have slots.
        """
        if self.lock is None:
            self.lock = rundir.RunLock(self.run_dir)
        try:
            return self._run(observer or NullObserver(), evaluate, fleet)
        finally:
            self.close()

    def _run(
        self, observer: Observer, evaluate: Evaluate | None, fleet: Fleet | None
    ) -> StudyOutcome:
        """The loop of `run`, under the run directory's lock."""
        results = read_trials(self.trials_path)
        resumed = len(results)
        started = time.time()
        with self._writing(results):
            optimizer = self._optimizer() if self.setup.space.knobs else None
        loop = _Loop(self, optimizer, results, started, observer)
        loop.tell_resumed()
        runner = self.executor(observer, evaluate, fleet)
        try:
            stopped = loop.run(runner) or "budget spent"
        finally:
            runner.close()
        results.sort(key=lambda r: r.number)
        baseline = next((r for r in results if r.origin == "baseline"), None)
        versions = next((r.versions for r in reversed(results) if r.versions), {})
        return StudyOutcome(
            results=results,
            best=self._best(results),
            baseline=baseline,
            stopped=stopped,
            resumed=resumed,
            versions=versions,
            wall_s=time.time() - started,
        )


class _Loop:
    """One session of a study's loop: the trials measured, in flight and waiting to run, and
    what the optimizer has been told of them."""

    def __init__(
        self,
        study: Study,
        optimizer: Optimizer | None,
        results: list[TrialResult],
        started: float,
        observer: Observer,
    ) -> None:
        self.study, self.optimizer, self.results = study, optimizer, results
        self.started, self.observer = started, observer
        self.space = study.setup.space
        self.runner: Executor | None = None
        self.measured: dict[str, TrialResult] = {}
        self.in_flight: dict[int, tuple[Any, bool]] = {}  # number -> (optimizer handle, asked)
        self.pending: set[str] = set()  # knobs in flight, not proposed twice
        # Proposals of a configuration in flight: told its result when it comes (not run
        # twice, and not told a made-up loss meanwhile).
        self.twins: dict[str, list[Any]] = {}
        self.backoffs: list[dict[str, Value]] = []  # below out-of-memory trials, run first
        # Numbers go on from the highest kept (trials run side by side finish out of order).
        self.next_number = max((r.number for r in results), default=-1) + 1
        # A prior corrected by each measured trial proposes the prior's starts one by one
        # (`Calibrator`); the baseline and warm starts follow them.
        spec = study.spec
        self.calibrator = (
            Calibrator(spec.prior, study.goal, self.space.load_knob(), _context(study.setup))
            if spec.prior and spec.calibrate
            else None
        )
        self.prior_left = PRIOR_STARTS - sum(r.origin == PRIOR for r in results)
        self.given_left = self.calibrator is not None and not any(
            r.origin == "baseline" for r in results
        )

    def budget_left(self) -> bool:
        return self.study._budget_left(self.results, self.started, len(self.in_flight))

    def tell_resumed(self) -> None:
        """The finished trials of earlier sessions, told to the fresh optimizer in order."""
        for result in self.results:
            try:
                self.tell(result)
            except (TunerError, ValueError) as exc:  # knobs this platform does not offer
                raise TunerError(
                    f"{self.study.trials_path}: trial {result.number} does not fit this "
                    f"machine's search space ({exc}); resume on the machine that started the "
                    "study"
                ) from None

    def judged(self, result: TrialResult) -> tuple[Losses, Feedback]:
        """The trial's losses under the study's goal, and what else it says (`Feedback`)."""
        goal = self.study.goal
        losses = goal.losses(result)
        failure: str | None = None
        if losses is None:
            failure = result.status if result.status != "ok" else "failed"
            if failure == "failed" and goal.breaches(result.measurement):
                failure = "limit"
        value = goal.value(result) if result.status == "ok" else None
        loss = None if value is None else (-value if goal.maximize else value)
        return losses, Feedback(failure, goal.pressure(result.measurement), loss)

    def tell(self, result: TrialResult, handle: Any = None, asked: bool = False) -> None:
        self.measured[_key(result.knobs)] = result
        if self.calibrator is not None:
            self.calibrator.add(result)
        if self.optimizer is None:
            return
        losses, feedback = self.judged(result)
        if asked:
            self.optimizer.tell(handle, losses, feedback)
            return
        # Knobs the engine chose itself (the baseline's) are told as it reported them.
        reported = {
            n: v
            for n, v in result.engine_config.items()
            if n in self.space.knobs and _fits(self.space, n, v)
        }
        self.optimizer.observe({**reported, **result.knobs}, losses, feedback)

    def run(self, runner: Executor) -> str | None:
        """The given configurations, then the search, then the confirmations; why the search
        stopped early, if it did."""
        self.runner = runner
        self.start()
        why = self.search()
        self.confirm()
        return why

    def submit(self, origin: str, knobs: dict[str, Value], handle: Any, asked: bool) -> None:
        assert self.runner is not None
        self.in_flight[self.next_number] = (handle, asked)
        self.pending.add(_key(knobs))
        self.runner.submit(self.next_number, origin, knobs)
        self.next_number += 1

    def known(self, knobs: dict[str, Value]) -> bool:
        """Whether `knobs` have been measured or are running."""
        return _key(knobs) in self.measured or _key(knobs) in self.pending

    def submit_given(
        self, origin: str, given: Sequence[dict[str, Value]], baseline: dict[str, Value] | None
    ) -> None:
        """Given configurations not yet measured or running; `baseline`'s as the baseline."""
        for knobs in warm_knobs(self.space, given):
            if not self.known(knobs) and self.budget_left():
                is_baseline = baseline is not None and _key(knobs) == _key(baseline)
                self.submit("baseline" if is_baseline else origin, knobs, None, asked=False)

    def start(self) -> None:
        """Predict, then measure: the prior's best first, then the baseline, then the
        warm-start configurations, whatever the optimizer's own initial design; it hears of
        them all as of the baseline. A predicted start that is the engine's defaults runs as
        the baseline."""
        spec = self.study.spec
        if self.calibrator is not None:
            return  # one start at a time, chosen by the corrected prior (`fill`)
        defaults = self.space.default_knobs()
        self.submit_given(PRIOR, spec.prior.starts if spec.prior else [], defaults)
        self.submit_baseline()

    def submit_baseline(self) -> None:
        """The engine's defaults (unless measured or running), then the warm starts."""
        spec = self.study.spec
        defaults = self.space.default_knobs()
        has_baseline = _key(defaults) in self.pending or any(
            r.origin == "baseline" for r in self.results
        )
        if not has_baseline and self.budget_left():
            self.submit("baseline", defaults, None, asked=False)
        self.submit_given(WARM_START, spec.warm_start, None)

    def fill(self) -> str | None:
        """Proposals until every slot is busy; why the search stopped, if it did."""
        assert self.runner is not None
        repeats = 0
        while len(self.in_flight) < self.runner.slots and self.budget_left():
            if self.calibrator is not None and self.prior_left > 0:
                self.prior_left -= 1
                knobs = self.calibrator.next(self.known)
                if knobs is not None and not self.space.violated(knobs):
                    self.submit_given(PRIOR, [knobs], self.space.default_knobs())
                continue
            if self.given_left:
                self.given_left = False
                self.submit_baseline()
                continue
            if self.backoffs:
                knobs = self.backoffs.pop(0)
                if not self.known(knobs):
                    self.submit(BACK_OFF, knobs, None, asked=False)
                continue
            if self.optimizer is None:
                return "nothing to search: every knob is fixed"
            try:
                proposal = self.optimizer.ask()
            except SpaceExhausted:
                proposal = None
            if proposal is not None and not (
                self.known(proposal.knobs) or self.space.violated(proposal.knobs)
            ):
                repeats = 0
                self.submit(proposal.origin, proposal.knobs, proposal.handle, asked=True)
                continue
            if proposal is not None:
                self.answer_repeat(proposal)
                repeats += 1
            if proposal is None or repeats >= MAX_REPEATED_PROPOSALS:
                # The search stops as exhausted only once every allowed configuration ran.
                knobs = self.unmeasured()
                if knobs is None:
                    return "search space exhausted"
                repeats = 0
                self.submit(FILL, knobs, None, asked=False)
        return None

    def answer_repeat(self, proposal: Proposal) -> None:
        """A proposal that runs no trial: measured already (told its result), in flight (told
        when it ends), or a combination the engine rejects (told it failed)."""
        assert self.optimizer is not None
        key = _key(proposal.knobs)
        if key in self.pending:
            self.twins.setdefault(key, []).append(proposal.handle)
            return
        known = self.measured.get(key)
        if known is None:
            self.optimizer.tell(proposal.handle, None, Feedback("forbidden"))
        else:
            self.optimizer.tell(proposal.handle, *self.judged(known))

    def unmeasured(self) -> dict[str, Value] | None:
        """A configuration of the space neither measured, running nor forbidden, drawn at
        random (seeded by the study); None when there is none."""
        rng = random.Random(f"{self.study.spec.seed}:{len(self.measured)}")
        every = self.space.enumerate()
        if every is not None:
            left = [k for k in every if not self.known(k)]
            return rng.choice(left) if left else None
        for _ in range(FILL_DRAWS):
            values = {name: draw(knob, rng) for name, knob in self.space.knobs.items()}
            knobs = self.space.assemble(values)
            if not self.known(knobs) and self.space.violated(knobs) is None:
                return knobs
        return None

    def record(self, result: TrialResult) -> None:
        """A finished trial, with the prior's prediction beside it, kept in the run directory."""
        study = self.study
        if study.spec.prior is not None and result.prediction is None:
            found = study.spec.prior.prediction(result.knobs)
            if found is not None and study.speed_of_light and result.status == "ok":
                found = study.speed_of_light(result.knobs, found)
            result = result.model_copy(update={"prediction": found})
        with study._writing(self.results):
            rundir.append_trial(study.trials_path, result)
        self.results.append(result)

    def search(self) -> str | None:
        """Trials until the budget is spent or the search stops; why it stopped, if it did."""
        assert self.runner is not None
        with self.study._writing(self.results):
            why = self.fill()
        for result in self.runner.as_completed():
            handle, asked = self.in_flight.pop(result.number)
            self.pending.discard(_key(result.knobs))
            self.record(result)
            waiting = self.twins.pop(_key(result.knobs), [])
            if waiting and not asked:
                # The optimizer proposed the baseline while it ran: told through that
                # proposal (SMAC miscounts a trial observed while its twin is running).
                handle, asked = waiting.pop(), True
            with self.study._writing(self.results):
                self.tell(result, handle, asked)
                for twin in waiting:
                    self.tell(result, twin, asked=True)
            self.observer.trial_finished(result, self.study._best(self.results))
            smaller = None
            if result.status == "oom" and not getattr(self.optimizer, "steps_down", False):
                smaller = self.space.backed_off(result.knobs)
            if smaller is not None:
                self.backoffs.append(smaller)
            if why is None:
                with self.study._writing(self.results):
                    why = self.fill()
        return why

    def confirm(self) -> None:
        """Fresh repeats of the best configurations: the figures the profile keeps."""
        assert self.runner is not None
        for knobs in self.study._to_confirm(self.results):
            self.submit(CONFIRM, knobs, None, asked=False)
        for result in self.runner.as_completed():
            self.in_flight.pop(result.number)
            self.record(result)
            self.observer.trial_finished(result, self.study._best(self.results))


def warm_knobs(space: SearchSpace, given: Sequence[dict[str, Value]]) -> list[dict[str, Value]]:
    """Configurations of another GPU model in this space: the knobs it holds at their given
    values, the rest at their defaults; those it forbids are left out."""
    warm: list[dict[str, Value]] = []
    for knobs in given:
        held = {n: v for n, v in knobs.items() if n in space.knobs and _fits(space, n, v)}
        mapped = space.assemble(space.searched_values({**space.default_knobs(), **held}))
        if not space.violated(mapped) and mapped not in warm:
            warm.append(mapped)
    return warm


def warm_start(spec: StudySpec, setup: Setup, profiles_dir: Path) -> StudySpec:
    """`spec` starting from another GPU model's best configurations (its profile's best and
    front, first in the initial design) when this machine's GPU model has no profile for the
    same engine, model, workload shape and goal and another model does."""
    from tuner.profiles.profile import profiles_by_gpu, read_profile, requests_shape, tuned_for

    if setup.replay is not None or not setup.requests:
        return spec
    shape = requests_shape(setup.workload.slug, setup.requests)
    tuned = tuned_for(shape, spec.objectives, spec.constraints)
    held = profiles_by_gpu(profiles_dir, setup.catalogue.engine, setup.model.slug, tuned)
    if setup.hardware.slug in held or not held:
        return spec
    for path in held.values():
        try:
            profile = read_profile(path)
        except TunerError:
            continue
        return _started_from(spec, profile, path)
    return spec


def warm_start_from(spec: StudySpec, setup: Setup, path: Path) -> StudySpec:
    """`spec` starting from the best configurations of the profile at `path` (`--warm-start`);
    one line when it cannot be read or holds nothing this study's space can run."""
    from tuner.profiles.profile import read_profile

    profile = read_profile(path)
    started = _started_from(spec, profile, path)
    held = {n for knobs in started.warm_start for n in knobs if n in setup.space.knobs}
    if not held or not warm_knobs(setup.space, started.warm_start):
        raise TunerError(
            f"--warm-start {path}: none of its configurations fits this study's space "
            f"({profile.engine.name} profile; this study searches {', '.join(setup.space.knobs)})"
        )
    return started


def _started_from(spec: StudySpec, profile: Any, path: Path) -> StudySpec:
    knobs = [profile.best.knobs]
    knobs += [p.knobs for p in profile.front if p.knobs not in knobs]
    return spec.model_copy(update={"warm_start": knobs, "warm_start_from": str(path)})


def replay_study(
    table: Path,
    *,
    run_dir: Path,
    fleet: Fleet | None = None,
    until: Callable[[Sequence[TrialResult]], bool] | None = None,
    **spec: Any,
) -> StudyOutcome:
    """A whole study on the replay of `table`: tuner's own loop (the `prior`'s starts first,
    then the baseline, then the `warm_start` configurations), on a `fleet`'s workers where one
    is given (each trial sleeping its recorded GPU time times `replay_time_scale`), ended early
    once `until(results)` holds. `spec` holds the `StudySpec` fields: `trials`, `seed`,
    `optimizer` (default ladder), `confirm`, `objectives`, `constraints`, `prior`, `pibo`, ..."""
    engine = f"{REPLAY_PREFIX}{table}"
    setup = prepare(engine, "", "")
    study_spec = StudySpec(
        engine=engine,
        model=setup.model.ref,
        workload=setup.workload,
        fleet=fleet.spec if fleet is not None else None,
        **spec,
    )
    study = Study.create(study_spec, run_dir, setup)
    study.until = until
    return study.run(fleet=fleet)


def _fits(space: SearchSpace, name: str, value: Value) -> bool:
    try:
        space.knobs[name].check(value)
    except TunerError:
        return False
    return True


def _context(setup: Setup) -> dict[str, float]:
    """The workload's prompt and output lengths, for the calibration's features."""
    shape = workload_shape(setup)
    return {"isl": shape["isl"], "osl": shape["osl"]}


def _key(knobs: dict[str, Value]) -> str:
    return json.dumps(knobs, sort_keys=True)
