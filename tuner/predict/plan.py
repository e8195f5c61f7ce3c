"""`tuner plan`: capacity planning with no GPU, from AIConfigurator's predictions.

For a vLLM engine, a model, a GPU model and a number of GPUs, every configuration of a grid
over the knobs the performance model reads (`tuner.predict.aiconfigurator`) is predicted and ranked
by the goal (`tuner.predict.prior.rank`): those predicted to fit and keep the limits first. The
result is a profile marked `predicted` (its name ends in `--predicted`): `tuner profile export` and
`tune --prior PROFILE` take it, and it never replaces a measured profile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from tuner import __version__
from tuner.errors import TunerError
from tuner.hardware.machine import slugify
from tuner.measure.measurement import MeasurementProtocol
from tuner.measure.objective import Goal
from tuner.measure.trial import TrialResult
from tuner.predict.aiconfigurator import (
    SYSTEMS,
    AIConfiguratorPrior,
    Workload,
    check_covered,
    prior_for,
)
from tuner.predict.prior import Ranking, rank
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
from tuner.specs.knobs import Value, gpus_of
from tuner.specs.workloads import Distribution, WorkloadSpec

#: The requests in flight a plan tries (with the workload's whole count), where not given.
LOADS = (1, 4, 16, 64, 256)
#: The offline engine's `max_num_seqs` a plan tries, where not given.
MAX_NUM_SEQS = (16, 64, 256, 1024)


@dataclass
class Plan:
    """A plan's ranked predictions and the profile it writes."""

    ranking: Ranking
    profile: Profile
    gpus: int


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
    engine: str, gpus: int, requests: int, given: Mapping[str, Sequence[Value]]
) -> list[dict[str, Value]]:
    """The configurations a plan predicts: tensor parallel sizes (powers of two up to `gpus`)
    x the load (`concurrency` for the server, `max_num_seqs` offline), the rest at vLLM's
    defaults; `given` replaces or adds a knob's values (`--grid NAME=V1,V2`)."""
    sizes: list[Value] = [2**i for i in range(8) if 2**i <= gpus]
    if engine == "vllm-server":
        load: tuple[str, list[Value]] = (
            "concurrency",
            sorted({*(c for c in LOADS if c < requests), requests}),
        )
    else:
        load = ("max_num_seqs", list(MAX_NUM_SEQS))
    values: dict[str, Sequence[Value]] = {"tensor_parallel_size": sizes, load[0]: load[1]}
    values.update(given)
    configurations: list[dict[str, Value]] = [{}]
    for name, options in values.items():
        configurations = [{**c, name: v} for c in configurations for v in options]
    return [c for c in configurations if gpus_of(c) <= gpus]


def make_plan(
    engine: str,
    model: str,
    gpu: str,
    gpus: int,
    workload: WorkloadSpec,
    goal: Goal,
    *,
    precision: str | None = None,
    given: Mapping[str, Sequence[Value]] | None = None,
) -> Plan:
    """Predicts and ranks a plan's grid; one line for what the model does not cover."""
    check_covered(engine, gpu)  # before the workload: the one line naming what is covered
    if workload.requests is None:
        raise TunerError("a plan needs the workload's request count")
    shape = Workload(
        workload.requests, mean_tokens(workload.input_tokens), mean_tokens(workload.output_tokens)
    )
    prior = prior_for(engine, model, gpu, shape, precision=precision)
    configurations = grid(engine, gpus, shape.requests, given or {})
    ranking = rank(prior, configurations, goal)
    if not ranking.ranked:
        why = next(iter(prior.refused.values()), "no prediction")
        raise TunerError(f"{prior.label}: no configuration of the grid could be predicted ({why})")
    best = ranking.ranked[0]
    best = best.model_copy(
        update={"prediction": prior.with_speed_of_light(best.knobs, best.prediction)}
        if best.prediction is not None
        else {}
    )
    ranking.ranked[0] = best
    profile = _profile(engine, model, gpus, workload, shape, goal, prior, ranking)
    return Plan(ranking, profile, gpus)


def _profile(
    engine: str,
    model: str,
    gpus: int,
    workload: WorkloadSpec,
    shape: Workload,
    goal: Goal,
    prior: AIConfiguratorPrior,
    ranking: Ranking,
) -> Profile:
    name, slug = next((n, sl) for system, n, sl in SYSTEMS.values() if system == prior.system)
    best = ranking.ranked[0] if ranking.kept else None
    if best is None:
        raise TunerError(
            f"{prior.label}: no configuration of the grid is predicted to fit and keep "
            f"{', '.join(c.text for c in goal.constraints) or 'the goal'}"
        )
    baseline = _baseline(ranking.ranked, engine, shape.requests)
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
        predicted=prior.label,
    )


def _baseline(ranked: Sequence[TrialResult], engine: str, requests: int) -> TrialResult | None:
    """vLLM's defaults as the plan predicted them: one GPU, every request at once."""
    load = {"concurrency": requests} if engine == "vllm-server" else {"max_num_seqs": 256}
    want = {"tensor_parallel_size": 1, **load}
    return next((r for r in ranked if all(r.knobs.get(k) == v for k, v in want.items())), None)


def parse_plan_grid(pairs: Sequence[str]) -> dict[str, list[Value]]:
    """`--grid name=v1,v2` pairs over the knobs the model reads; one line otherwise."""
    from tuner.predict.aiconfigurator import COVERS

    found: dict[str, list[Value]] = {}
    for name, values in grid_pairs(pairs):
        if name not in COVERS:
            raise TunerError(f"--grid {name}: the model reads {', '.join(sorted(COVERS))}")
        found[name] = [_value(v) for v in values]
    return found


def _value(text: str) -> Value:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)
