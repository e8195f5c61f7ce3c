"""`--engine replay:<table.json>`: answers trials from a recorded landscape (`tuner.landscape`).

The search space is the recorded engine's knob catalogue narrowed to the table's grid (numeric
knobs become ordered sets of the recorded values), so a study searches exactly what was
measured. A trial's answer is the recorded measurement with noise drawn from its recorded spread
(seeded by the study's seed and the trial number), and its cost is the recorded GPU time: the
measurement, plus the model load when the load-time knobs differ from the trial before. No
engine is loaded and no time passes: a whole study runs in seconds, in process.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from tuner import rules
from tuner.engines import REPLAY_PREFIX
from tuner.errors import TunerError
from tuner.knobs import Catalogue, ChoiceSpec, KnobSpec, Value
from tuner.landscape import Landscape, read_landscape
from tuner.measure import Measurement, Run
from tuner.trial import TrialResult


def replay_study(
    table: Path, *, trials: int, seed: int, run_dir: Path, optimizer: str = "gp"
) -> Any:
    """A whole study on the replay of `table`: tuner's own loop, baseline first."""
    from tuner.rundir import StudySpec
    from tuner.setup import prepare
    from tuner.study import Study

    engine = f"{REPLAY_PREFIX}{table}"
    setup = prepare(engine, "", "")
    spec = StudySpec(
        engine=engine,
        model=setup.model.ref,
        workload=setup.workload,
        trials=trials,
        seed=seed,
        optimizer=optimizer,  # type: ignore[arg-type]
    )
    return Study.create(spec, run_dir, setup).run()


@cache
def replay_engine(engine: str) -> type[Replay]:
    """The replay adapter class of `replay:<path>` (one class per table)."""
    given = engine.removeprefix(REPLAY_PREFIX)
    if not given:
        raise TunerError("replay takes a table: --engine replay:<table.json>")
    path = Path(given).expanduser()
    table = read_landscape(path)
    return type(f"Replay[{path.name}]", (Replay,), {"table": table, "table_path": path})


class Replay:
    """Not loaded like other adapters: `answerer` stands in for a worker's trials."""

    name: ClassVar[str] = "replay"
    fresh_process_per_load: ClassVar[bool] = False
    table: ClassVar[Landscape]
    table_path: ClassVar[Path]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TunerError("a replay engine is not loaded; its trials are answered from the table")

    @classmethod
    def versions(cls) -> dict[str, str]:
        return {**cls.table.versions, "replay": cls.table_path.name}

    @classmethod
    def catalogue(cls) -> Catalogue:
        """The recorded engine's catalogue, narrowed to what the table holds."""
        from tuner.engines import engine_class

        source: Catalogue = engine_class(cls.table.engine).catalogue()
        held = {n: v for p in cls.table.points for n, v in p.knobs.items()}
        recorded: dict[str, list[Value]] = {}
        for name in source.knobs:
            if name in cls.table.grid:
                recorded[name] = cls.table.grid[name]
            elif name in cls.table.fixed:
                recorded[name] = [cls.table.fixed[name]]
            elif name in held:
                recorded[name] = [held[name]]  # searched when recorded, one value throughout
        knobs: dict[str, KnobSpec] = {}
        for name, values in recorded.items():
            spec = source.knobs[name]
            default = cls.table.baseline.get(name, values[0])
            when = spec.when if spec.when and set(spec.when) <= set(recorded) else None
            base = {"stage": spec.stage, "help": spec.help, "when": when}
            if spec.type in ("int", "float"):
                knobs[name] = KnobSpec(type=spec.type, values=values, default=default, **base)
            else:
                choices: list[Value | ChoiceSpec] = list(values)
                knobs[name] = KnobSpec(type="choice", choices=choices, default=default, **base)
        forbidden = [
            f
            for f in source.forbidden
            if set(f.if_) <= set(knobs)
            and (f.expr is None or rules.names(rules.parse(f.expr)) <= set(knobs))
        ]
        return Catalogue(
            engine=f"replay of {cls.table.engine}",
            summary=f"{cls.table.engine} as recorded in {cls.table_path.name}",
            knobs=knobs,
            forbidden=forbidden,
            initial=[{n: v for n, v in p.items() if n in knobs} for p in source.initial],
        )

    @classmethod
    def answerer(cls, seed: int) -> Any:
        """`evaluate(number, origin, knobs) -> TrialResult` for a study with `seed`."""
        last_load: list[str] = []

        def evaluate(number: int, origin: str, knobs: dict[str, Value]) -> TrialResult:
            point = cls.table.point(knobs)
            load_key = cls.table.load_key(knobs)
            reused = bool(last_load) and last_load[-1] == load_key
            last_load.append(load_key)
            load_s = None if reused else cls.table.load_cost_s(knobs)
            cost = cls.table.measure_cost_s(point) + (load_s or 0.0)
            rng = random.Random(f"{seed}:{number}")
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
                versions=cls.versions(),
            )

        return evaluate


def _noisy(measurement: Measurement | None, rng: random.Random) -> Measurement | None:
    """The recorded measurement scaled by one draw from its own spread (never below 5%)."""
    if measurement is None:
        return None
    factor = max(1.0 + measurement.output_tokens_per_s.cv * rng.gauss(0.0, 1.0), 0.05)

    def scaled(run: Run) -> Run:
        return run.model_copy(update={"elapsed_s": run.elapsed_s / factor})

    return Measurement.from_runs(
        scaled(measurement.cold),
        [scaled(r) for r in measurement.runs],
        remeasured=measurement.remeasured,
    ).model_copy(update={"stable": measurement.stable})
