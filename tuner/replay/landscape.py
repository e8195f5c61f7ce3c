"""Recorded landscapes: every point of a small search space, measured, kept as a table.

A landscape (`benchmarks/data/*.json`) is a grid of knob values (for example batch size x attention
x cache x dtype) each measured with the full protocol of a trial, plus the GPU, versions, workload
and protocol they were measured with. `--engine replay:<table.json>` answers trials from it
(`tuner.replay.replay`), so that searches can be compared in seconds without a GPU.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuner.errors import TunerError
from tuner.execution.executor import NullObserver, run_trial
from tuner.execution.worker import Worker
from tuner.files import read_text, write_atomic
from tuner.hardware.records import GpuRecord, HostRecord, gpu_record, host_record
from tuner.measure.measurement import MeasurementProtocol
from tuner.measure.objective import THROUGHPUT, Goal
from tuner.measure.trial import TrialResult
from tuner.specs.knobs import KnobSpec, Value, describe
from tuner.specs.workloads import WorkloadSpec

SCHEMA_VERSION: Literal[1] = 1


#: An engine launch where a table records none: the engine's start, compilation and CUDA graphs
#: (`LAUNCH_S`), then the weights read at about 1 GB/s, 2 bytes a parameter
#: (`LAUNCH_S_PER_BILLION` a billion parameters). Like any trial time, it counts once per GPU.
LAUNCH_S = 60.0
LAUNCH_S_PER_BILLION = 2.0
#: Billions of parameters of the models whose names do not say (their model cards on the
#: Hugging Face Hub: total parameters, experts included).
MODEL_SIZES_B = {
    "phi-1": 1.3,
    "phi-1_5": 1.3,
    "phi-2": 2.7,
    "mixtral-8x7b": 46.7,
    "minimax-m2.5": 229.0,
    "kimi-k2.5": 1040.0,
}
#: The size assumed for a model whose name gives none and that `MODEL_SIZES_B` lacks.
UNKNOWN_SIZE_B = 7.0


def model_size_b(model: str) -> float:
    """Billions of parameters of a model, from its name (`Llama-3.1-70B`, `Bloom-1b7`,
    `Mixtral-8x7b`) or `MODEL_SIZES_B`; `UNKNOWN_SIZE_B` where neither says."""
    name = model.rsplit("/", 1)[-1].lower()
    if name in MODEL_SIZES_B:
        return MODEL_SIZES_B[name]
    experts = re.search(r"(\d+)x(\d+(?:\.\d+)?)b", name)
    if experts:
        return int(experts.group(1)) * float(experts.group(2))
    split = re.search(r"(?<![\d.])(\d+)b(\d)(?!\d)", name)  # 1b7: 1.7 billion
    if split:
        return float(f"{split.group(1)}.{split.group(2)}")
    plain = re.search(r"(?<![\d.])(\d+(?:\.\d+)?)b(?![a-z])", name)
    return float(plain.group(1)) if plain else UNKNOWN_SIZE_B


def default_launch_s(model: str) -> float:
    """Seconds an engine launch of `model` takes where a table records none."""
    return LAUNCH_S + LAUNCH_S_PER_BILLION * model_size_b(model)


class Source(BaseModel):
    """Where an imported table's figures come from (measured by others, not by tuner), how
    its knobs map onto tuner's, and how figures it lacks were derived."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="the study or data set")
    repository: str = Field(description="where it is published (a repository or a package)")
    version: str = Field(description="the commit or package version the figures were read at")
    files: list[str] = Field(description="the files read, inside the repository or package")
    rows: list[str] = Field(default=[], description="the source's ids of the rows used")
    mapping: list[str] = Field(default=[], description="how the source's knobs map onto tuner's")
    derived: list[str] = Field(default=[], description="figures derived, and how")
    knobs: dict[str, KnobSpec] = Field(
        default={}, description="knobs the source varied that the engine's catalogue lacks"
    )
    not_run: list[dict[str, Value]] = Field(
        default=[], description="grid points the source never ran: outside the replayed space"
    )

    @property
    def line(self) -> str:
        """`Martinez 2024 (UPCBarcelonaTech/infpop at 1b4908c9, RQ2/tables/...)`."""
        return f"{self.name} ({self.repository} at {self.version[:12]}, {', '.join(self.files)})"


class Landscape(BaseModel):
    """A recorded grid: every point a trial result, in the order it was measured."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = SCHEMA_VERSION
    kind: Literal["tuner-landscape"] = "tuner-landscape"
    engine: str
    model: str
    workload: WorkloadSpec
    protocol: MeasurementProtocol
    gpu: GpuRecord
    host: HostRecord
    versions: dict[str, str]
    grid: dict[str, list[Value]] = Field(description="the values measured, per knob")
    fixed: dict[str, Value] = Field(description="knobs held at one value in every point")
    baseline: dict[str, Value] = Field(description="the engine's default configuration")
    load_knobs: list[str] = Field(description="knobs that need a new model load")
    points: list[TrialResult]
    recorded_at: datetime
    command: str = ""
    source: Source | None = Field(
        default=None, description="for a table imported from others' measurements: its source"
    )

    def point(self, knobs: Mapping[str, Value]) -> TrialResult:
        """The recorded trial of `knobs`; knobs outside the table are a `TunerError`."""
        found = self.by_key.get(_key(knobs))
        if found is None:
            raise TunerError(
                f"{_fmt(knobs)} is not in the recorded table (it holds {len(self.points)} "
                f"points of {', '.join(self.grid)})"
            )
        return found

    @cached_property
    def by_key(self) -> dict[str, TrialResult]:
        """The points by their knobs."""
        return {_key(p.knobs): p for p in self.points}

    def load_cost_s(self, knobs: Mapping[str, Value]) -> float:
        """The recorded model load of the load group `knobs` belong to (0 if none loaded);
        for a table that records no load at all (those imported from others), the stated
        default for its model's size (`default_launch_s`)."""
        group = self.load_key(knobs)
        loads = [p.load_s for p in self.points if p.load_s and self.load_key(p.knobs) == group]
        if loads:
            return loads[0]
        return 0.0 if any(p.load_s for p in self.points) else default_launch_s(self.model)

    def load_key(self, knobs: Mapping[str, Value]) -> str:
        return _key({n: v for n, v in knobs.items() if n in self.load_knobs})

    def optimum(self, goal: Goal = THROUGHPUT) -> TrialResult:
        """The best point under `goal` (the fastest, by default), however it spread."""
        best = goal.best(self.points, robust=False)
        if best is None:
            raise TunerError("the table holds no successful point")
        return best

    def measure_cost_s(self, point: TrialResult) -> float:
        """Seconds a point took, its model load left out."""
        return max(point.wall_s - (point.load_s or 0.0), 0.0)


def read_landscape(path: Path) -> Landscape:
    """Reads and checks a table; any problem is one `TunerError` line."""
    text = read_text(path, "landscape")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TunerError(f"{path}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, dict) or data.get("kind") != "tuner-landscape":
        raise TunerError(f"{path} is not a recorded landscape (no kind: tuner-landscape)")
    try:
        return Landscape.model_validate(data)
    except ValidationError as exc:
        raise TunerError(f"{path}: {describe(exc)}") from None


def write_landscape(landscape: Landscape, path: Path, *, indent: int | None = 1) -> Path:
    """Writes atomically (a table is never half written, and a failed write leaves nothing);
    `indent=None` writes one line (imported tables with per-request latencies)."""
    return write_atomic(path, landscape.model_dump_json(indent=indent) + "\n")


def grid_pairs(pairs: Sequence[str]) -> list[tuple[str, list[str]]]:
    """`--grid name=v1,v2,...` pairs as names and value texts; one line for a malformed one."""
    split = []
    for pair in pairs:
        name, sep, values = pair.partition("=")
        if not sep or not values.strip():
            raise TunerError(f"--grid takes name=value,value,... not {pair!r}")
        split.append((name.strip(), [v.strip() for v in values.split(",")]))
    return split


def parse_grid(pairs: Sequence[str], space: Any) -> dict[str, list[Value]]:
    """`name=v1,v2,...` pairs, each value parsed and checked against the search space."""
    grid: dict[str, list[Value]] = {}
    for name, values in grid_pairs(pairs):
        if name not in space.knobs:
            raise TunerError(f"--grid {name}: not a searched knob here ({', '.join(space.knobs)})")
        grid[name] = [space.knobs[name].parse(v) for v in values]
    return grid


def grid_points(space: Any, grid: Mapping[str, list[Value]], pinned: Mapping[str, Value]) -> list:
    """Every grid combination completed with defaults and `pinned`, forbidden ones left out,
    duplicates (a knob inactive under its condition) once; ordered so that points sharing a
    model load follow each other."""
    names = list(grid)
    defaults = space.default_knobs()
    seen: dict[str, dict[str, Value]] = {}
    for combo in itertools.product(*(grid[n] for n in names)):
        given = {**pinned, **dict(zip(names, combo, strict=True))}
        values = {**defaults, **given}
        # A knob whose condition fails in this combination is left out (torch_compile under a
        # dynamic cache), so that one grid can hold a conditional knob.
        given = {
            n: v
            for n, v in given.items()
            if all(values.get(p) in allowed for p, allowed in space.when.get(n, ()))
        }
        knobs = space.complete(given)
        if space.violated(knobs) is None:
            seen.setdefault(_key(knobs), knobs)
    points = list(seen.values())
    load = load_knob_names(space)
    points.sort(key=lambda k: json.dumps([k.get(n) for n in load], default=str))
    return points


def load_knob_names(space: Any) -> list[str]:
    """Knobs, searched or fixed, whose change needs a new model load."""
    stages = {n: k.stage for n, k in space.catalogue.knobs.items()}
    return [n for n in [*space.knobs, *space.fixed] if stages.get(n) == "load"]


def record(
    setup: Any,
    grid: Mapping[str, list[Value]],
    protocol: MeasurementProtocol,
    timeout_s: float,
    work_dir: Path,
    *,
    command: str = "",
    on_point: Callable[[int, int, TrialResult], None] | None = None,
) -> Landscape:
    """Measures every grid point in one worker (loads shared where the load knobs match).
    Knobs outside the grid stay at their defaults, or at the values pinned in `setup`."""

    space = setup.space
    baseline = space.default_knobs()
    # The engine's defaults are a point of every table: the comparison's "default" method.
    full = {
        n: list(dict.fromkeys([*v, baseline[n]])) if n in baseline else v for n, v in grid.items()
    }
    points = grid_points(space, full, space.fixed)
    if _key(baseline) not in {_key(p) for p in points}:
        points.insert(0, baseline)
    results: list[TrialResult] = []
    worker = Worker(work_dir)
    try:
        for number, knobs in enumerate(points):
            result = run_trial(
                worker,
                setup.task(knobs, protocol),
                number,
                "grid",
                knobs,
                timeout_s,
                NullObserver(),
            )
            results.append(result)
            if on_point is not None:
                on_point(number, len(points), result)
    finally:
        worker.close()
    versions = next((r.versions for r in results if r.versions), {})
    return Landscape(
        engine=setup.engine,
        model=setup.model.ref,
        workload=setup.workload,
        protocol=protocol,
        gpu=gpu_record(setup.hardware),
        host=host_record(setup.hardware),
        versions=versions,
        grid={n: sorted(v, key=_order) for n, v in full.items()},
        fixed=dict(space.fixed),
        baseline=baseline,
        load_knobs=load_knob_names(space),
        points=results,
        recorded_at=datetime.now(UTC),
        command=command,
    )


def _order(value: Value) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int | float) else (1, str(value))


def _key(knobs: Mapping[str, Value]) -> str:
    return json.dumps(dict(knobs), sort_keys=True)


def _fmt(knobs: Mapping[str, Value]) -> str:
    return " ".join(f"{n}={v}" for n, v in knobs.items())
