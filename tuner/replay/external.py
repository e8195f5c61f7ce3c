"""Measurements made by others, as replay tables (`tuner.replay.landscape.Landscape` with a
`Source`).

Two sources:

- **Martinez 2024** (the appendix in `UPCBarcelonaTech/infpop`): per GPU model (A100, V100) and
  engine (vLLM, HF `pipeline`), the median throughput of 20 models at 1, 2, 4 or 8 GPUs and
  batch sizes 1 to 1028 (`RQ2/tables`). One table per (model, GPU, engine).
- **NVIDIA AIConfigurator's silicon measurements** (`aiconfigurator_core/systems/
  silicon_sample.csv` in the `aiconfigurator-core` package): vLLM serving runs, each with its
  measured TTFT and TPOT. One table per (model, GPU, precision, ISL x OSL, vLLM version).

Figures are read, never edited; what a source lacks is derived, and each table says how in its
`source.derived`; how the source's knobs map onto tuner's is in `source.mapping`.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tuner.errors import TunerError
from tuner.files import read_text
from tuner.hardware.records import GpuRecord, HostRecord
from tuner.measure.measurement import Measurement, MeasurementProtocol, Run, alike_run
from tuner.measure.trial import Status, TrialResult
from tuner.replay.landscape import Landscape, Source, _key
from tuner.specs.knobs import KnobSpec, Value, gpus_of
from tuner.specs.workloads import WorkloadSpec

MARTINEZ_REPOSITORY = "UPCBarcelonaTech/infpop"
#: The commit `../shared/external/martinez2024/` was copied from (its README says so).
MARTINEZ_COMMIT = "1b4908c994fabf89a50b825f5ffdafedf807c890"
MARTINEZ_GPUS = {"a100": "NVIDIA A100", "tesla": "NVIDIA V100"}
MARTINEZ_ENGINES = {"vLLM": "vllm", "autohf": "hf-pipeline"}
#: The study's workload: HumanEval-infilling single-line (1,033 prompts), 5 new tokens each.
MARTINEZ_PROMPTS = 1033
MARTINEZ_NEW_TOKENS = 5

SILICON_FILE = "aiconfigurator_core/systems/silicon_sample.csv"
SILICON_GPUS = {
    "h100_sxm": "NVIDIA H100 SXM",
    "h200_sxm": "NVIDIA H200 SXM",
    "b200_sxm": "NVIDIA B200",
}
#: A silicon table needs this many distinct configurations to be worth a search.
SILICON_MIN_POINTS = 8

_NO_HOST = HostRecord(cpu="not recorded by the source", cores=0, memory_mib=0)
_TABLE = re.compile(r"table_batchsizes_(a100|tesla)_(vLLM|autohf)_gpu_(\d+)\.csv$")


def _gpu(slug: str, name: str, count: int) -> GpuRecord:
    return GpuRecord(slug=slug, name=name, count=count)


def _run(elapsed_s: float, requests: int, input_tokens: int, output_tokens: int, **extra) -> Run:
    return Run(
        elapsed_s=elapsed_s,
        requests=requests,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        truncated=False,
        **extra,
    )


def _point(
    number: int,
    knobs: dict[str, Value],
    status: Status,
    wall_s: float,
    when: datetime,
    *,
    measurement: Measurement | None = None,
    reason: str | None = None,
    versions: Mapping[str, str] | None = None,
) -> TrialResult:
    return TrialResult(
        number=number,
        origin="source",
        knobs=knobs,
        status=status,
        reason=reason,
        measurement=measurement,
        wall_s=wall_s,
        started_at=when,
        versions=dict(versions or {}),
    )


# -- Martinez 2024 ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cell:
    """One cell of an RQ2 table: a model's median throughput at a GPU count and batch size."""

    gpus: int
    batch: int
    throughput: float | None  # None: nan or empty, a failed point
    file: str


def _rq2_cells(folder: Path) -> dict[tuple[str, str, str], list[_Cell]]:
    """Every cell of `RQ2/tables`, by (GPU, engine, model)."""
    tables = folder / "RQ2" / "tables"
    if not tables.is_dir():
        raise TunerError(f"{folder}: no RQ2/tables folder (is this the Martinez 2024 appendix?)")
    cells: dict[tuple[str, str, str], list[_Cell]] = defaultdict(list)
    for path in sorted(tables.glob("table_batchsizes_*.csv")):
        found = _TABLE.search(path.name)
        if found is None:
            continue
        gpu, engine, gpus = found.group(1), found.group(2), int(found.group(3))
        rows = list(csv.reader(read_text(path, "table").splitlines()))
        header, body = rows[0], rows[1:]
        batches = [int(b) for b in header[1:]]
        for row in body:
            for batch, text in zip(batches, row[1:], strict=True):
                value = float(text) if text.strip() and text.strip() != "nan" else None
                if value is not None and not math.isfinite(value):
                    value = None
                rel = f"RQ2/tables/{path.name}"
                cells[(gpu, engine, row[0])].append(_Cell(gpus, batch, value, rel))
    if not cells:
        raise TunerError(f"{tables}: no table_batchsizes_<gpu>_<engine>_gpu_<n>.csv files")
    return cells


def _failures(folder: Path) -> dict[tuple[str, str, int, int], Counter[str]]:
    """allData.csv's failure messages per (model, engine, GPUs, batch size), both GPU models
    together (the file names no GPU model)."""
    path = folder / "allData.csv"
    found: dict[tuple[str, str, int, int], Counter[str]] = defaultdict(Counter)
    if not path.is_file():
        return found
    for row in csv.DictReader(read_text(path, "table").splitlines()):
        if row["errors_l"] != "ok":
            key = (row["model"], row["engine"], int(row["nrGPUs"]), int(row["batchSize"]))
            found[key][row["errors_l"]] += 1
    return found


def _martinez_mapping(engine: str) -> list[str]:
    common = [
        "nrGPUs (the table's gpu_<n>) is the number of GPUs the model ran on",
        "a model missing from a gpu_<n> table was not run at that GPU count: that count is "
        "left out of its table",
        "a batch size without a column in a gpu_<n> table was not run there: outside the "
        "replayed space (source.not_run)",
    ]
    if engine == "vLLM":
        return [
            "engine: tuner's vllm (offline LLM.generate)",
            "nrGPUs -> tensor_parallel_size (the study's script passes world_size as "
            "tensor_parallel_size)",
            "batchSize -> prompts_per_call: prompts passed to one LLM.generate call; not "
            "max_num_seqs, which stayed at vLLM's default (256), so that vLLM batched at most "
            "256 of them at once; tuner's own vllm engine passes the whole workload in one call "
            "(the baseline here: the largest batch size)",
            "1028 is the batch size the script ran (its list says 1028, the HPO space 1024)",
            *common,
        ]
    return [
        "engine: tuner's hf-pipeline (transformers pipeline('text-generation'))",
        "batchSize -> batch_size (the pipeline's own)",
        "nrGPUs -> num_gpus: GPUs visible to accelerate's device_map='auto' (tuner's hf "
        "engine spreads with device_map='balanced'; hf-pipeline has no such knob)",
        *common,
    ]


_MARTINEZ_DERIVED = [
    "throughput: the RQ2 median (over the study's per-batch throughputs: generated tokens / "
    "batch time), as output tok/s; one run per point, so a replay has no noise",
    f"workload: HumanEval-infilling single-line, {MARTINEZ_PROMPTS} prompts, "
    f"{MARTINEZ_NEW_TOKENS} new tokens each (the script's max_tokens list is 5, 10, 20; the "
    "appendix's plots are of max tokens 5, read here as the tables' setting); prompt tokens "
    "are not in the source (0 here)",
    f"seconds: {MARTINEZ_PROMPTS} x {MARTINEZ_NEW_TOKENS} tokens / throughput, times nrGPUs "
    "for GPU-seconds; no model load time is in the source (0)",
    "a failed point (nan or empty cell) costs one batch at the speed of the largest "
    "successful batch size below it at the same GPU count (the script stops a point at its "
    "first failed batch), or 60 s where there is none",
    "a failed point's status and reason come from allData.csv's rows for the same model, "
    "engine, GPU count and batch size (that file names no GPU model): oom where CUDA out of "
    "memory is its most common message",
]


def _martinez_failure(counts: Counter[str] | None, cell: _Cell) -> tuple[Status, str]:
    if not counts:
        return "crashed", (
            f"failed in the source ({cell.file}: no throughput at batch size {cell.batch}); "
            "allData.csv has no failed repeat of it"
        )
    message, _ = counts.most_common(1)[0]
    said = ", ".join(f"{m} x{n}" for m, n in counts.most_common())
    status: Status = "oom" if "out of memory" in message else "crashed"
    return status, (
        f"failed in the source ({cell.file}: no throughput at batch size {cell.batch}); "
        f"allData.csv's failed repeats of it (either GPU model): {said}"
    )


def martinez_tables(folder: Path, *, when: datetime | None = None) -> dict[str, Landscape]:
    """One table per (model, GPU model, engine) of the appendix in `folder`, by file name."""
    when = when or datetime.now(UTC)
    failures = _failures(folder)
    out: dict[str, Landscape] = {}
    for (gpu, engine, model), cells in sorted(_rq2_cells(folder).items()):
        name = f"martinez2024-{gpu}-{MARTINEZ_ENGINES[engine]}-{_slug(model)}.json"
        out[name] = _martinez_table(gpu, engine, model, cells, failures, when)
    return out


#: The workload of every Martinez table.
MARTINEZ_WORKLOAD = WorkloadSpec(
    name="humaneval-infilling-single-line",
    description="HumanEval-infilling single-line prompts, as Martinez 2024 ran them",
    source="humaneval",
    requests=MARTINEZ_PROMPTS,
    output_tokens=MARTINEZ_NEW_TOKENS,
)


def _martinez_table(
    gpu: str,
    engine: str,
    model: str,
    cells: list[_Cell],
    failures: Mapping[tuple[str, str, int, int], Counter[str]],
    when: datetime,
) -> Landscape:
    gpus_knob, batch_knob = (
        ("tensor_parallel_size", "prompts_per_call")
        if engine == "vLLM"
        else ("num_gpus", "batch_size")
    )
    levels = sorted({c.gpus for c in cells})
    batches = sorted({c.batch for c in cells})
    points, not_run = _martinez_points(
        (gpus_knob, batch_knob), levels, batches, cells, failures.get, (model, engine), when
    )
    baseline: dict[str, Value] = {
        gpus_knob: levels[0],
        batch_knob: 1 if engine == "autohf" else batches[-1],
    }
    # The knob the engine's catalogue lacks: vLLM's prompts per generate call, or the
    # pipeline's GPU count.
    if engine == "vLLM":
        text = "prompts passed to one LLM.generate call"
        extra = {batch_knob: _int_knob("run", batches, int(baseline[batch_knob]), text, load=True)}
    else:
        text = "GPUs the pipeline's model is spread over (device_map)"
        extra = {gpus_knob: _int_knob("load", levels, levels[0], text)}
    source = Source(
        name="Martinez 2024, The Impact of Hyperparameters on LLM Inference Performance",
        repository=MARTINEZ_REPOSITORY,
        version=MARTINEZ_COMMIT,
        files=sorted({c.file for c in cells}),
        rows=[f"{model} in each file"],
        mapping=_martinez_mapping(engine),
        derived=_MARTINEZ_DERIVED,
        knobs=extra,
        not_run=not_run,
    )
    return Landscape(
        engine=MARTINEZ_ENGINES[engine],
        model=model,
        workload=MARTINEZ_WORKLOAD,
        protocol=MeasurementProtocol(),
        gpu=_gpu(gpu if gpu == "a100" else "v100", MARTINEZ_GPUS[gpu], max(levels)),
        host=_NO_HOST,
        versions={},
        grid={gpus_knob: list(levels), batch_knob: list(batches)},
        fixed={},
        baseline=baseline,
        load_knobs=[gpus_knob],
        points=points,
        recorded_at=when,
        command="python tools/import_external.py martinez2024",
        source=source,
    )


def _martinez_points(
    names: tuple[str, str],
    levels: list[int],
    batches: list[int],
    cells: list[_Cell],
    failures: Any,
    which: tuple[str, str],
    when: datetime,
) -> tuple[list[TrialResult], list[dict[str, Value]]]:
    """The table's points (GPU count by GPU count, batch sizes rising) and the grid points the
    source never ran."""
    gpus_knob, batch_knob = names
    held = {(c.gpus, c.batch): c for c in cells}
    tokens = MARTINEZ_PROMPTS * MARTINEZ_NEW_TOKENS
    points: list[TrialResult] = []
    not_run: list[dict[str, Value]] = []
    for level in levels:
        speed_below: float | None = None
        for batch in batches:
            knobs: dict[str, Value] = {gpus_knob: level, batch_knob: batch}
            cell = held.get((level, batch))
            if cell is None:
                not_run.append(knobs)
            elif cell.throughput is not None and cell.throughput > 0:
                elapsed = tokens / cell.throughput
                run = _run(elapsed, MARTINEZ_PROMPTS, 0, tokens, gpus=level)
                m = Measurement.from_runs(run, [run])
                points.append(_point(len(points), knobs, "ok", elapsed, when, measurement=m))
                speed_below = cell.throughput
            else:
                status, reason = _martinez_failure(failures((*which, level, batch)), cell)
                cost = batch * MARTINEZ_NEW_TOKENS / speed_below if speed_below else 60.0
                points.append(_point(len(points), knobs, status, cost, when, reason=reason))
    return points, not_run


# -- AIConfigurator's silicon measurements -----------------------------------------------------


_SILICON_MAPPING = [
    "engine: tuner's vllm-server (vLLM's OpenAI-compatible server under a load client)",
    "tp_size -> tensor_parallel_size",
    "attention_dp_size -> data_parallel_size (vLLM's --data-parallel-size; a knob of these "
    "tables only, where the rows vary it; empty counts as 1)",
    "moe_ep_size > 1 -> enable_expert_parallel (vLLM's --enable-expert-parallel; these tables "
    "only, where the rows vary it)",
    "silicon_concurrency (in silicon_data_source; batch_size where absent) -> concurrency: "
    "the client's requests in flight at most (tuner's server-load knob)",
    "GPUs used: tp_size x pp_size x data parallel size",
    "baseline (vLLM's defaults under the client's default load, every request at once), as "
    "near as the rows have it: the smallest layout at its largest concurrency",
    "a configuration without a row is outside the replayed space (source.not_run)",
]

_SILICON_DERIVED = [
    "each request: TTFT = silicon_ttft_ms, time per output token = silicon_tpot_ms, end to end "
    "= TTFT + (OSL - 1) x TPOT; every request alike, so each latency percentile is that figure "
    "(the file does not say whether its figures are means or medians); a run's per-request "
    "latencies are one entry standing for every request (PerRequest.alike), so that goodput "
    "counts all of them or none",
    "workload: the table's largest concurrency in requests, ISL prompt and OSL output tokens "
    "each; a run at concurrency c takes (requests / c) x end-to-end (steady waves of c), so "
    "output tok/s = c x OSL / end-to-end",
    "GPU-seconds: a run's seconds times its GPUs; no model load time is in the source (0)",
    "several rows of one configuration (repeated measurements) are the point's timed runs",
]


def _silicon_rows(path: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader(read_text(path, "silicon table").splitlines()))
    needed = {"id", "backend", "system", "model_path", "isl", "osl", "silicon_ttft_ms"}
    if not rows or not needed <= set(rows[0]):
        raise TunerError(f"{path}: not AIConfigurator's silicon_sample.csv (no {sorted(needed)})")
    return rows


def _concurrency(row: Mapping[str, str]) -> int:
    found = re.search(r"silicon_concurrency=(\d+)", row.get("silicon_data_source", ""))
    return int(found.group(1)) if found else int(row["batch_size"])


def _layout(row: Mapping[str, str]) -> dict[str, Value]:
    return {
        "tensor_parallel_size": int(row["tp_size"] or 1),
        "data_parallel_size": int(row["attention_dp_size"] or 1),
        "enable_expert_parallel": int(row["moe_ep_size"] or 1) > 1,
        "concurrency": _concurrency(row),
    }


def silicon_tables(
    path: Path, version: str, *, when: datetime | None = None
) -> dict[str, Landscape]:
    """One table per (model, GPU, precision, ISL x OSL, vLLM version) of the aggregated vLLM
    rows on H100, H200 and B200 with at least `SILICON_MIN_POINTS` configurations."""
    when = when or datetime.now(UTC)
    groups: dict[tuple[str, str, str, str, str, str], list[dict[str, str]]] = defaultdict(list)
    for row in _silicon_rows(path):
        if row["backend"] == "vllm" and row["mode"] == "agg" and row["system"] in SILICON_GPUS:
            fields = ("model_path", "system", "precision", "isl", "osl", "backend_version")
            model, system, precision, isl, osl, backend = (row[f] for f in fields)
            groups[(model, system, precision, isl, osl, backend)].append(row)
    out: dict[str, Landscape] = {}
    for key, rows in sorted(groups.items()):
        if len({_key(_layout(r)) for r in rows}) >= SILICON_MIN_POINTS:
            model, system, precision, isl, osl, backend = key
            name = "-".join(
                [
                    "silicon",
                    system.removesuffix("_sxm"),
                    _slug(model),
                    precision or "default",
                    f"{isl}x{osl}",
                    f"vllm{backend or 'unknown'}",
                ]
            )
            out[f"{name}.json"] = _silicon_table(rows, version, when)
    return out


def _silicon_run(row: Mapping[str, str], requests: int) -> Run:
    layout = _layout(row)
    return alike_run(
        float(row["silicon_ttft_ms"]),
        float(row["silicon_tpot_ms"]),
        requests=requests,
        isl=int(row["isl"]),
        osl=int(row["osl"]),
        concurrency=int(layout["concurrency"]),
        gpus=gpus_of({**layout, "pipeline_parallel_size": int(row["pp_size"] or 1)}),
    )


def _silicon_table(rows: list[dict[str, str]], version: str, when: datetime) -> Landscape:
    first = rows[0]
    by_point: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_point[_key(_layout(row))].append(row)
    layouts = [_layout(r[0]) for r in by_point.values()]
    varied = [n for n in layouts[0] if len({str(k[n]) for k in layouts}) > 1 or n == "concurrency"]
    varied = list(dict.fromkeys(["tensor_parallel_size", *varied]))
    grid = {n: sorted({k[n] for k in layouts}, key=lambda v: (str(type(v)), v)) for n in varied}
    requests = max(int(k["concurrency"]) for k in layouts)
    ordered = sorted(
        by_point.values(), key=lambda rs: [str(_layout(rs[0])[n]).zfill(6) for n in varied]
    )
    vllm = {"vllm": first["backend_version"] or "unknown"}
    points: list[TrialResult] = []
    for point_rows in ordered:
        knobs = {n: _layout(point_rows[0])[n] for n in varied}
        runs = [_silicon_run(r, requests) for r in point_rows]
        m = Measurement.from_runs(runs[0], runs)
        cost = statistics.median(r.elapsed_s for r in runs)
        points.append(_point(len(points), knobs, "ok", cost, when, measurement=m, versions=vllm))
    # vLLM's defaults (one GPU, no data or expert parallelism) under the client's default
    # load (every request at once), as near as the table has them: its smallest layout at its
    # largest concurrency.
    baseline = min(
        (p.knobs for p in points),
        key=lambda k: (
            *(k.get(n, 0) for n in varied if n != "concurrency"),
            -int(k["concurrency"]),
        ),
    )
    isl, osl = int(first["isl"]), int(first["osl"])
    return Landscape(
        engine="vllm-server",
        model=first["model_path"],
        workload=WorkloadSpec(
            name=f"silicon-{isl}x{osl}",
            description=f"{requests} requests of {isl} prompt and {osl} output tokens",
            source="synthetic",
            requests=requests,
            input_tokens=isl,
            output_tokens=osl,
        ),
        protocol=MeasurementProtocol(),
        gpu=_gpu(first["system"], SILICON_GPUS[first["system"]], 8),
        host=_NO_HOST,
        versions={
            "vllm": first["backend_version"] or "unknown",
            "precision": first["precision"] or "default",
        },
        grid=grid,
        fixed={},
        baseline=baseline,
        load_knobs=[n for n in varied if n != "concurrency"],
        points=points,
        recorded_at=when,
        command="python tools/import_external.py aiconfigurator",
        source=_silicon_source(rows, version, grid, points),
    )


def _silicon_source(
    rows: list[dict[str, str]], version: str, grid: dict[str, list[Any]], points: list[TrialResult]
) -> Source:
    """Where a silicon table comes from, how its columns map onto tuner's knobs, and the grid's
    layouts NVIDIA did not measure."""
    seen = {_key(p.knobs) for p in points}
    extra = {
        "data_parallel_size": _int_knob(
            "load", grid.get("data_parallel_size", [1]), 1, "vLLM data parallel replicas"
        ),
        "enable_expert_parallel": KnobSpec(
            type="bool", stage="load", default=False, help="vLLM expert parallelism (MoE layers)"
        ),
    }
    return Source(
        name="NVIDIA AIConfigurator silicon measurements",
        repository="aiconfigurator-core (PyPI)",
        version=version,
        files=[SILICON_FILE],
        rows=[r["id"] for r in rows],
        mapping=_SILICON_MAPPING,
        derived=_SILICON_DERIVED,
        knobs={n: s for n, s in extra.items() if n in grid},
        not_run=[k for k in _product(grid) if _key(k) not in seen],
    )


def _int_knob(
    stage: str, values: list[Any], default: int, text: str, *, load: bool = False
) -> KnobSpec:
    return KnobSpec(
        type="int", stage=stage, help=text, default=default, values=values,  # type: ignore[arg-type]
        range=(min(values), max(values)), load=load,
    )  # fmt: skip


def _product(grid: Mapping[str, Sequence[Value]]) -> Iterable[dict[str, Value]]:
    names = list(grid)
    for combo in itertools.product(*(grid[n] for n in names)):
        yield dict(zip(names, combo, strict=True))


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")
