"""`tuner plan`: capacity planning with no GPU, from AIConfigurator's predictions.

For a vLLM engine, a model, a GPU model and a number of GPUs, every configuration of a grid
over the knobs the performance model reads (`tuner.predict.aiconfigurator`) is predicted and ranked
by the goal (`tuner.predict.prior.rank`): those predicted to fit and keep the limits first. The
result is a profile marked `predicted` (its name ends in `--predicted`): `tuner profile export` and
`tune --prior PROFILE` take it, and it never replaces a measured profile.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tuner.errors import TunerError
from tuner.hardware.machine import slugify
from tuner.measure.measurement import MeasurementProtocol
from tuner.measure.objective import Goal
from tuner.measure.trial import Prediction, TrialResult
from tuner.predict.aiconfigurator import (
    SYSTEMS,
    AIConfiguratorPrior,
    Workload,
    check_covered,
    prior_for,
    system_for,
)
from tuner.predict.calibrate import Calibration, Point, figures
from tuner.predict.prior import Prior, Ranking, as_trial, rank
from tuner.profiles.capacity import Capacity, check_rate, fewest_gpus
from tuner.profiles.profile import (
    EngineRecord,
    GpuRecord,
    HostRecord,
    ModelRecord,
    Profile,
    WorkloadRecord,
    speedup,
    trial_counts,
    trial_record,
)
from tuner.replay.landscape import grid_pairs
from tuner.replay.replay import REPLAY_PREFIX, load_replay
from tuner.specs.knobs import Value, gpus_of
from tuner.specs.workloads import Distribution, WorkloadSpec, load_workload
from tuner.version import __version__

#: The values a plan predicts over where `--grid` does not say: every knob the model reads
#: that vLLM's users set (`tuner.predict.aiconfigurator`). Parallel sizes are the powers of two
#: up to `--gpus`; data and expert parallelism only for a mixture-of-experts model (for a dense
#: one the model predicts a data-parallel rank as a replica).
MAX_NUM_SEQS = (8, 16, 32, 64, 128, 256, 512, 1024)
#: The requests of a plan for a request rate (`--rate`) where not given: enough that the
#: engine's `max_num_seqs` bounds those in flight.
RATE_REQUESTS = max(MAX_NUM_SEQS)
MAX_NUM_BATCHED_TOKENS = (2048, 4096, 8192, 16384)
KV_CACHE_DTYPES = ("auto", "fp8")
#: vLLM's own (max_num_batched_tokens, max_num_seqs) per GPU system, for `vllm serve` and for
#: the offline `LLM`, as vLLM 0.32.0 sets them (`EngineArgs._set_default_args` in
#: vllm/engine/arg_utils.py: B200-class >= 160 GiB; H100 and H200 >= 70 GiB and not A100; the
#: rest): a plan's baseline.
VLLM_DEFAULTS: dict[str, dict[str, tuple[int, int]]] = {
    "b200_sxm": {"vllm-server": (16384, 1024), "vllm": (16384, 1024)},
    "h200_sxm": {"vllm-server": (8192, 1024), "vllm": (16384, 1024)},
    "h100_sxm": {"vllm-server": (8192, 1024), "vllm": (16384, 1024)},
    "a100_sxm": {"vllm-server": (2048, 256), "vllm": (8192, 256)},
    "l40s": {"vllm-server": (2048, 256), "vllm": (8192, 256)},
}


@dataclass
class Plan:
    """A plan's ranked predictions, the profile it writes, and what it took: the grid's
    configurations, those the model tells apart, its calls (the rest came from the cache) and
    seconds."""

    ranking: Ranking
    profile: Profile
    gpus: int
    capacity: Capacity | None = None
    configurations: int = 0
    distinct: int = 0
    calls: int = 0
    seconds: float = 0.0

    @property
    def cost(self) -> str:
        """What the plan took, in a line."""
        return (
            f"planned {self.configurations} configurations ({self.distinct} the model tells "
            f"apart) in {self.seconds:.1f} s; {self.calls} calls of the model, the rest from its "
            "cache"
        )


def plan_workload(
    workload: str,
    requests: int | None = None,
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    rate: float | None = None,
) -> WorkloadSpec:
    """The workload a plan predicts for, as `tuner plan`'s options size it; under a `rate`, as
    many requests in flight as a server admits (`RATE_REQUESTS`) unless `requests` is given."""
    if rate is not None and requests is None:
        requests = RATE_REQUESTS
    spec = load_workload(workload, requests=requests, output_tokens=output_tokens)
    if input_tokens is not None:
        spec = spec.model_copy(update={"input_tokens": input_tokens})
    return spec


def model_slug(ref: str) -> str:
    """A named model's slug, as a study of it from the Hugging Face cache would write it."""
    org, _, name = ref.rpartition("/")
    return f"{slugify(org)}--{slugify(name)}" if org else slugify(name)


def mean_tokens(length: int | Distribution | None) -> int:
    """A workload length's mean, in tokens."""
    if length is None:
        raise TunerError("a plan needs the workload's prompt length: a synthetic workload")
    if isinstance(length, int):
        return length
    if length.distribution == "uniform" or length.mean is None:
        return round((length.min + length.max) / 2)
    return round(min(max(length.mean, length.min), length.max))


def grid(
    gpus: int, given: Mapping[str, Sequence[Value | None]], *, moe: bool = False
) -> list[dict[str, Value]]:
    """The configurations a plan predicts: tensor x pipeline (x data, with expert parallelism
    on or off, for a mixture of experts) parallel sizes within `gpus`, x `max_num_seqs` x
    `max_num_batched_tokens` x `kv_cache_dtype`; `given` replaces or adds a knob's values
    (`--grid NAME=V1,V2`)."""
    sizes: list[Value] = [2**i for i in range(8) if 2**i <= gpus]
    values: dict[str, Sequence[Value | None]] = {
        "tensor_parallel_size": sizes,
        "pipeline_parallel_size": sizes,
    }
    if moe:
        values["data_parallel_size"] = sizes
        values["enable_expert_parallel"] = [False, True]
    values |= {
        "max_num_seqs": MAX_NUM_SEQS,
        "max_num_batched_tokens": MAX_NUM_BATCHED_TOKENS,
        "kv_cache_dtype": KV_CACHE_DTYPES,
    }
    values.update(given)
    configurations: list[dict[str, Value]] = [{}]
    for name, options in values.items():
        configurations = [
            {**c, name: v} if v is not None else dict(c) for c in configurations for v in options
        ]
    return [c for c in configurations if gpus_of(c) <= gpus and not _same_as_no_ep(c)]


def distinct(
    prior: AIConfiguratorPrior, configurations: Sequence[dict[str, Value]]
) -> list[dict[str, Value]]:
    """The configurations the model can tell apart: of those it is asked the same of (every
    `max_num_seqs` above the requests there are, say), the first in the grid."""
    seen: set[str] = set()
    kept = []
    for knobs in configurations:
        key = json.dumps(prior.arguments(knobs), sort_keys=True)
        if key not in seen:
            seen.add(key)
            kept.append(knobs)
    return kept


def _same_as_no_ep(knobs: Mapping[str, Value]) -> bool:
    """Expert parallelism over one GPU is no expert parallelism: one of the two is kept."""
    ranks = int(knobs.get("tensor_parallel_size", 1)) * int(knobs.get("data_parallel_size", 1))  # type: ignore[arg-type]
    return bool(knobs.get("enable_expert_parallel")) and ranks == 1


@dataclass(frozen=True)
class PlanRequest:
    """What a plan is asked: a vLLM engine, a model, a GPU model and how many of them, the
    workload and the goal; the weights' precision, knob values to predict over instead of
    the grid's (`--grid`), a request rate to serve (`--rate`) and recorded tables of the GPU
    to calibrate by (`--calibrate`)."""

    engine: str
    model: str
    gpu: str
    gpus: int
    workload: WorkloadSpec
    goal: Goal
    precision: str | None = None
    given: Mapping[str, Sequence[Value | None]] = field(default_factory=dict)
    rate: float | None = None
    calibrate: Sequence[Path] = ()


def make_plan(request: PlanRequest) -> Plan:
    """Predicts and ranks a plan's grid; with a `rate` (requests/s), also the configuration
    that serves it within the limits on the fewest GPUs (`tuner.profiles.capacity`); with
    tables to `calibrate` by, every prediction corrected by them first; one line for what the
    model does not cover."""
    engine, gpu, workload, goal = request.engine, request.gpu, request.workload, request.goal
    check_covered(engine, gpu)  # before the workload: the one line naming what is covered
    if workload.requests is None:
        raise TunerError("a plan needs the workload's request count")
    shape = Workload(
        workload.requests, mean_tokens(workload.input_tokens), mean_tokens(workload.output_tokens)
    )
    started = time.monotonic()
    prior = prior_for(engine, request.model, gpu, shape, precision=request.precision)
    calls = prior.estimator.calls
    configurations = grid(request.gpus, request.given, moe=prior.moe)
    told_apart = distinct(prior, configurations)
    ranker: AIConfiguratorPrior | CalibratedPlanPrior = prior
    if request.calibrate:
        ranker = CalibratedPlanPrior(prior, request.calibrate)
        ranker.fit(told_apart)
    ranking = rank(ranker, told_apart, goal)
    if not ranking.ranked:
        why = next(iter(prior.refused.values()), "no prediction")
        raise TunerError(f"{prior.label}: no configuration of the grid could be predicted ({why})")
    best = ranking.ranked[0]
    best = best.model_copy(
        update={"prediction": ranker.with_speed_of_light(best.knobs, best.prediction)}
        if best.prediction is not None
        else {}
    )
    ranking.ranked[0] = best
    profile = _profile(request, shape, prior, ranker, ranking)
    needed = None
    if request.rate is not None:
        needed = fewest_gpus(check_rate(request.rate), ranking.ranked[: ranking.kept])
    return Plan(
        ranking,
        profile,
        request.gpus,
        capacity=needed,
        configurations=len(configurations),
        distinct=len(told_apart),
        calls=prior.estimator.calls - calls,
        seconds=time.monotonic() - started,
    )


def _profile(
    request: PlanRequest,
    shape: Workload,
    prior: AIConfiguratorPrior,
    ranker: Prior,
    ranking: Ranking,
) -> Profile:
    engine, model, gpus, workload, goal = (
        request.engine, request.model, request.gpus, request.workload, request.goal,
    )  # fmt: skip
    name, slug = next((n, sl) for system, n, sl in SYSTEMS.values() if system == prior.system)
    best = ranking.ranked[0] if ranking.kept else None
    if best is None:
        raise TunerError(
            f"{prior.label}: no configuration of the grid is predicted to fit and keep "
            f"{', '.join(c.text for c in goal.constraints) or 'the goal'}"
        )
    baseline = _baseline(prior, ranker, engine)
    return Profile(
        tuner_version=__version__,
        created_at=datetime.now(UTC),
        gpu=GpuRecord(slug=slug, name=name, count=gpus),
        host=HostRecord(cpu="none: predicted, not measured", cores=0, memory_mib=0),
        engine=EngineRecord(
            name=engine, adapter=engine, versions={"aiconfigurator-core": prior.label}
        ),
        model=ModelRecord(ref=model, slug=model_slug(model), source="named"),
        workload=WorkloadRecord(
            name=workload.slug,
            source=workload.source,
            seed=workload.seed,
            requests=shape.requests,
            input_tokens=shape.requests * shape.isl,
            output_tokens=shape.requests * shape.osl,
            mean_input_tokens=shape.isl,
            mean_output_tokens=shape.osl,
        ),
        protocol=MeasurementProtocol(),
        seed=0,
        optimizer="plan",
        objectives=[o.name for o in goal.objectives],
        constraints=[c.text for c in goal.constraints],
        best=trial_record(best),
        front=[trial_record(r) for r in goal.front(ranking.ranked)] if goal.multi else [],
        baseline=trial_record(baseline) if baseline is not None else None,
        speedup=speedup(goal, baseline, best),
        trials=trial_counts(ranking.ranked),
        predicted=ranking.label,
    )


def _baseline(prior: AIConfiguratorPrior, ranker: Prior, engine: str) -> TrialResult | None:
    """vLLM's defaults as the model predicts them: one GPU, vLLM's own batched tokens and
    sequences for this GPU (`VLLM_DEFAULTS`), the model's KV cache type."""
    tokens, seqs = VLLM_DEFAULTS[prior.system][engine]
    knobs: dict[str, Value] = {
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "max_num_seqs": seqs,
        "max_num_batched_tokens": tokens,
        "kv_cache_dtype": "auto",
    }
    found = ranker.predict(knobs)
    return as_trial(-1, knobs, found) if found is not None else None


# -- calibrated by recorded tables ------------------------------------------------------------

#: What a plan's calibration reads of a configuration: the model's own arguments for it
#: (`AIConfiguratorPrior.arguments`), so that a table's client concurrency and a plan's
#: `max_num_seqs` are both the requests in flight (`batch_size`), and a batched-token budget
#: left unset is the prompt length the model then assumes (`ctx_tokens`).
IN_FLIGHT = "batch_size"
CALIBRATED_KNOBS = (
    "tp_size",
    "pp_size",
    "attention_dp_size",
    "moe_ep_size",
    "ctx_tokens",
    "kvcache_quant_mode",
    IN_FLIGHT,
)


def model_features(prior: AIConfiguratorPrior, knobs: Mapping[str, Value]) -> dict[str, Value]:
    """`CALIBRATED_KNOBS` of a configuration, as the model is asked of it."""
    args = prior.arguments(knobs)
    found: dict[str, Value] = {n: args[n] for n in CALIBRATED_KNOBS if args.get(n) is not None}
    found["ctx_tokens"] = args.get("ctx_tokens") or args["isl"]
    found["moe_ep_size"] = args.get("moe_ep_size") or 1
    return found


class CalibratedPlanPrior:
    """A plan's prior with every prediction corrected by a calibration fitted on recorded
    tables of the same GPU (`tuner.predict.calibrate`): what `tuner plan --calibrate` ranks."""

    def __init__(self, prior: AIConfiguratorPrior, tables: Sequence[Path]) -> None:
        self.prior, self.covers = prior, prior.covers
        self.context = {"isl": float(prior.workload.isl), "osl": float(prior.workload.osl)}
        measured = [p for path in tables for p in _table_points(prior, path)]
        if not measured:
            raise TunerError("--calibrate: the tables have no point the model predicts")
        self.calibration: Calibration | None = None
        self.measured = measured
        self.label = (
            f"{prior.label}, calibrated on {len(measured)} measured points of "
            f"{len(tables)} table{'s' if len(tables) > 1 else ''}"
        )

    def fit(self, configurations: Sequence[Mapping[str, Value]]) -> None:
        """The calibration, centred on the configurations the plan will rank."""
        judged = [
            Point(model_features(self.prior, k), {}, context=self.context) for k in configurations
        ]
        self.calibration = Calibration(CALIBRATED_KNOBS, judged, IN_FLIGHT).fit(self.measured)

    def predict(self, knobs: Mapping[str, Value]) -> Prediction | None:
        found = self.prior.predict(knobs)
        if found is None or found.measurement is None or self.calibration is None:
            return found
        features = model_features(self.prior, knobs)
        point = Point(features, figures(found.measurement), context=self.context)
        return self.calibration.prediction(point, found, self.label)

    def with_speed_of_light(self, knobs: Mapping[str, Value], found: Prediction) -> Prediction:
        return self.prior.with_speed_of_light(knobs, found)


def _table_points(prior: AIConfiguratorPrior, path: Path) -> list[Point]:
    """A recorded table's measured points beside the model's predictions of them (for its own
    model and workload); one line for a table of another GPU or one the model cannot read."""
    replay = load_replay(f"{REPLAY_PREFIX}{path}")
    table = replay.table
    if system_for(table.gpu.slug) != prior.system:
        raise TunerError(
            f"--calibrate {path}: measured on {table.gpu.name}, not on this plan's GPU "
            f"({prior.system})"
        )
    shape = replay.workload_summary()
    workload = Workload(
        int(shape["requests"]),
        round(shape["mean_input_tokens"]),
        round(shape["mean_output_tokens"]),
    )
    context = {"isl": float(workload.isl), "osl": float(workload.osl)}
    own = prior_for(
        table.engine, table.model, table.gpu.slug, workload,
        precision=table.versions.get("precision"),
    )  # fmt: skip
    points = []
    for p in table.points:
        found = own.predict(p.knobs) if p.status == "ok" else None
        if found is None or found.measurement is None or p.measurement is None:
            continue
        features = model_features(own, p.knobs)
        points.append(Point(features, figures(found.measurement), figures(p.measurement), context))
    return points


def parse_plan_grid(pairs: Sequence[str]) -> dict[str, list[Value | None]]:
    """`--grid name=v1,v2` pairs over the knobs the model reads; one line otherwise."""
    from tuner.predict.aiconfigurator import COVERS

    found: dict[str, list[Value | None]] = {}
    for name, values in grid_pairs(pairs):
        if name not in COVERS:
            raise TunerError(f"--grid {name}: the model reads {', '.join(sorted(COVERS))}")
        found[name] = [_value(v) for v in values]
    return found


def _value(text: str) -> Value | None:
    """A `--grid` value: a number, true/false, a word, or `default` (the knob left to the
    engine: not set)."""
    if text.lower() == "default":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)
