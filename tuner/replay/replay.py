"""`--engine replay:<table.json>`: a study's trials answered from a recorded landscape.

A replay is not an engine: nothing is loaded. It gives the study a search space (the recorded
engine's knob catalogue narrowed to the table's grid, numeric knobs as ordered sets of the
recorded values, so a study searches exactly what was measured) and an evaluator that answers
each trial in process with the recorded measurement, noise drawn from its recorded spread (seeded
by the study's seed and the trial number), and the recorded GPU time as its cost: the
measurement, plus the model load when the load-time knobs differ from the trial before. A whole
study runs in seconds.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

from tuner.engines import engine_class, shipped_catalogue
from tuner.errors import TunerError
from tuner.measure.measurement import Measurement, Run
from tuner.measure.objective import Goal
from tuner.measure.trial import TrialResult
from tuner.replay.landscape import Landscape, read_landscape
from tuner.specs import rules
from tuner.specs.knobs import Catalogue, ForbiddenSpec, KnobSpec, Value

REPLAY_PREFIX = "replay:"
#: Why a replay forbids a point of its grid that the table's source never ran.
NOT_RUN = "the table's source never ran this configuration"


def is_replay(engine: str) -> bool:
    """Whether `engine` names a recorded table to replay rather than an engine."""
    return engine.startswith(REPLAY_PREFIX)


def open_replay(engine: str) -> Replay | None:
    """The replay `engine` names (`replay:<table.json>`), or None for an engine."""
    return load_replay(engine) if is_replay(engine) else None


def catalogue_of(engine: str) -> Catalogue:
    """The knob catalogue of an engine, or of a replay's table."""
    replay = open_replay(engine)
    return replay.catalogue() if replay is not None else engine_class(engine).catalogue()


@cache
def load_replay(engine: str) -> Replay:
    """The replay of `replay:<path>`; one line when the table cannot be read."""
    given = engine.removeprefix(REPLAY_PREFIX)
    if not given:
        raise TunerError("replay takes a table: --engine replay:<table.json>")
    path = Path(given).expanduser()
    return Replay(read_landscape(path), path)


@dataclass(frozen=True)
class Replay:
    """A recorded table, as a study's search space and evaluator."""

    table: Landscape
    path: Path

    def recorded(self, what: str) -> bool:
        """Whether the table's measurements hold `latency` or `telemetry` figures."""
        for p in self.table.points:
            if p.measurement is None or not p.measurement.runs:
                continue
            run = p.measurement.runs[0]
            return (run.latency if what == "latency" else run.telemetry) is not None
        return False

    def workload_summary(self) -> dict[str, float | int]:
        """The recorded workload's counts, as `tuner.specs.workloads.summarize` gives them, from a
        run that completed every request."""
        runs = [
            run
            for p in self.table.points
            if p.measurement is not None
            for run in (p.measurement.cold, *p.measurement.runs)
            if not run.truncated and not run.failed_requests
        ]
        if not runs:
            raise TunerError(f"{self.path}: no recorded run completed its workload")
        run = runs[0]
        return {
            "requests": run.requests,
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "mean_input_tokens": round(run.input_tokens / run.requests, 1),
            "mean_output_tokens": round(run.output_tokens / run.requests, 1),
        }

    def versions(self) -> dict[str, str]:
        return {**self.table.versions, "replay": self.path.name}

    def judge(self, goal: Goal, best: TrialResult) -> VersusTable:
        """A replayed study's pick against the table's optimum under the same goal."""
        optimum = self.table.optimum(goal)
        picked, top = goal.value(best), goal.value(optimum)
        assert picked is not None and top is not None  # a table records its goal's figure
        ratio = picked / top if goal.maximize else top / picked
        return VersusTable(self.table, goal, best, optimum, picked, top, ratio)

    def catalogue(self) -> Catalogue:
        """The recorded engine's catalogue, narrowed to what the table holds."""
        table = self.table
        source = shipped_catalogue(table.engine)
        specs = {**source.knobs, **(table.source.knobs if table.source else {})}
        held = {n: v for p in table.points for n, v in p.knobs.items()}
        recorded: dict[str, list[Value]] = {}
        for name in specs:
            if name in table.grid:
                recorded[name] = table.grid[name]
            elif name in table.fixed:
                recorded[name] = [table.fixed[name]]
            elif name in held:
                recorded[name] = [held[name]]  # searched when recorded, one value throughout
        knobs: dict[str, KnobSpec] = {}
        for name, values in recorded.items():
            spec = specs[name]
            default = table.baseline.get(name, values[0])
            when = spec.when if spec.when and set(spec.when) <= set(recorded) else None
            if spec.type == "int" or spec.type == "float":
                numbers = [v for v in values if isinstance(v, int | float)]
                knobs[name] = KnobSpec(
                    type=spec.type, values=numbers, default=default, stage=spec.stage,
                    help=spec.help, when=when, backoff=spec.backoff, load=spec.load,
                )  # fmt: skip
            else:
                knobs[name] = KnobSpec(
                    type="choice", choices=list(values), default=default, stage=spec.stage,
                    help=spec.help, when=when, backoff=spec.backoff, load=spec.load,
                )  # fmt: skip
        forbidden = [
            f
            for f in source.forbidden
            if set(f.if_) <= set(knobs)
            and (f.expr is None or rules.names(rules.parse(f.expr)) <= set(knobs))
        ]
        # A point the source never ran is outside the space: never answered, never proposed.
        not_run = table.source.not_run if table.source else []
        forbidden += [
            ForbiddenSpec.model_validate(
                {"if": {n: v for n, v in point.items() if n in knobs}, "because": NOT_RUN}
            )
            for point in not_run
        ]
        how = f"as measured by {table.source.line}" if table.source else "as recorded"
        return Catalogue(
            engine=f"replay of {table.engine}",
            summary=f"{table.engine} {how} in {self.path.name}",
            knobs=knobs,
            forbidden=forbidden,
            initial=[{n: v for n, v in p.items() if n in knobs} for p in source.initial],
        )

    def evaluator(
        self, seed: int, time_scale: float = 0.0
    ) -> Callable[[int, str, dict[str, Value]], TrialResult]:
        """`evaluate(number, origin, knobs) -> TrialResult` for a study with `seed`; with a
        `time_scale`, each trial sleeps its recorded GPU time times that (a stand-in for the
        real trial, to study trials side by side)."""
        table = self.table
        versions = self.versions()
        last_load: list[str] = []

        def evaluate(number: int, origin: str, knobs: dict[str, Value]) -> TrialResult:
            point = table.point(knobs)
            load_key = table.load_key(knobs)
            reused = bool(last_load) and last_load[-1] == load_key
            last_load.append(load_key)
            load_s = None if reused else table.load_cost_s(knobs)
            cost = table.measure_cost_s(point) + (load_s or 0.0)
            rng = random.Random(f"{seed}:{number}")
            if time_scale:
                time.sleep(cost * time_scale)
            return TrialResult(
                number=number,
                origin=origin,
                knobs=knobs,
                status=point.status,
                reason=point.reason,
                measurement=_noisy(point.measurement, rng),
                load_s=load_s,
                reused_model=reused,
                wall_s=cost,
                started_at=datetime.now(UTC),
                versions=versions,
            )

        return evaluate


@dataclass(frozen=True)
class VersusTable:
    """A replayed study's best configuration beside the table's optimum: `ratio` is the share
    of the optimum's figure the pick reaches (1.0 when it found the optimum)."""

    table: Landscape
    goal: Goal
    best: TrialResult
    optimum: TrialResult
    picked: float
    top: float
    ratio: float

    def line(self, trials: int, gpu_s: float) -> str:
        """One line: the pick, its share of the optimum, what the study spent."""
        goal, table = self.goal, self.table
        measured_by = f" as measured by {table.source.line}" if table.source else ""
        return (
            f"replay of {table.gpu.name}{measured_by}: best {goal.primary.fmt(self.picked)} "
            f"({goal.label}), {self.ratio:.1%} of the table's optimum "
            f"({goal.primary.fmt(self.top)}), {trials} trials, {gpu_s:,.0f} recorded GPU-seconds"
        )


def _noisy(measurement: Measurement | None, rng: random.Random) -> Measurement | None:
    """The recorded measurement sped up or slowed down by one draw from its own spread (never
    below 5% of its speed); its latencies move with it."""
    if measurement is None:
        return None
    factor = max(1.0 + measurement.output_tokens_per_s.cv * rng.gauss(0.0, 1.0), 0.05)

    def scaled(run: Run) -> Run:
        """The run as if the engine were `factor` times as fast: shorter, and every latency
        shorter by as much."""
        update: dict[str, object] = {"elapsed_s": run.elapsed_s / factor}
        if run.latency is not None:
            update["latency"] = run.latency.scaled(1 / factor)
        if run.per_request is not None:
            update["per_request"] = run.per_request.scaled(1 / factor)
        return run.model_copy(update=update)

    return Measurement.from_runs(
        scaled(measurement.cold),
        [scaled(r) for r in measurement.runs],
        remeasured=measurement.remeasured,
    ).model_copy(update={"stable": measurement.stable})
