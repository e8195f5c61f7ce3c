"""Tuned profiles: the JSON record of a study's best configuration on one GPU model.

Layout: `profiles/<gpu-slug>/<engine>/<model-slug>--<workload>-<requests>x<tokens>[--<objectives>]
[--<limits>].json`: what a profile was tuned for is in its name, so that a study on another
workload shape, objective or SLO writes a profile of its own. The JSON Schema shipped in
`tuner/schemas/profile.schema.json` is generated from `Profile` (`tuner profile schema`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tuner.errors import TunerError
from tuner.files import os_error, read_text, write_atomic
from tuner.hardware.records import GpuRecord, HostRecord
from tuner.measure.measurement import Measurement, MeasurementProtocol, Run
from tuner.measure.objective import (
    Goal,
    goal,
    metric,
    one_objective_to_many,
)
from tuner.measure.trial import STATUSES, Prediction, Status, TrialResult
from tuner.specs.knobs import KnobName, Value, describe
from tuner.specs.workloads import (
    Request,
    Tokenizer,
    build_requests,
    load_workload,
    summarize,
    traffic,
)

SCHEMA_VERSION: Literal[1] = 1
SCHEMA_FILE = Path(__file__).parent.parent / "schemas" / "profile.schema.json"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EngineRecord(_Record):
    name: str
    adapter: str = Field(description="registry name or import path given as --engine")
    versions: dict[str, str]


class ModelRecord(_Record):
    ref: str
    slug: str
    source: Literal["synthetic", "local", "hf-cache", "replay", "named"] = Field(
        description="where it was loaded from; `named` for a plan, which loads no model"
    )


class LengthSpread(_Record):
    """Token lengths over the workload's requests: 10th, 50th and 90th percentile, maximum."""

    p10: int
    p50: int
    p90: int
    max: int


class Arrivals(_Record):
    """How the workload's requests arrive, apart from the load knobs (concurrency)."""

    kind: Literal["at once", "poisson", "trace"] = Field(
        description="at once: every request (or as many as the concurrency lets in); poisson: "
        "at a set request rate; trace: at recorded times (scaled to a set rate, where one is)"
    )
    rate_per_s: float | None = Field(default=None, description="mean requests per second")
    gap_cv: float | None = Field(
        default=None,
        description="coefficient of variation of the gaps between arrivals: 1 for Poisson, "
        "above 1 for bursts",
    )


class TrafficRecord(_Record):
    """The traffic's shape: what decides which configuration serves it best."""

    input_tokens: LengthSpread
    output_tokens: LengthSpread
    shared_prefix_share: float = Field(
        ge=0,
        le=1,
        description="share of prompt tokens that repeat a prefix an earlier request began "
        "with, in whole 16-token blocks (what a prefix cache can reuse)",
    )
    arrivals: Arrivals

    def differences(self, other: TrafficRecord) -> list[str]:
        """How `other` (the traffic a profile is used on) differs from this one (the traffic it
        was tuned on), a phrase each: median lengths apart by over 20%, prefix sharing by over
        10 points, another kind of arrivals or a mean rate apart by over 20%."""
        found = []
        for what, mine, theirs in (
            ("prompt", self.input_tokens.p50, other.input_tokens.p50),
            ("output", self.output_tokens.p50, other.output_tokens.p50),
        ):
            if _apart(mine, theirs):
                found.append(f"median {what} {theirs:,} tokens, tuned on {mine:,}")
        if abs(self.shared_prefix_share - other.shared_prefix_share) > 0.1:
            found.append(
                f"{other.shared_prefix_share:.0%} of prompt tokens in shared prefixes, tuned on "
                f"{self.shared_prefix_share:.0%}"
            )
        here, there = self.arrivals, other.arrivals
        if here.kind != there.kind:
            found.append(f"arrivals {there.kind}, tuned on {here.kind}")
        elif here.rate_per_s and there.rate_per_s and _apart(here.rate_per_s, there.rate_per_s):
            found.append(
                f"arrivals at {there.rate_per_s:g} req/s, tuned on {here.rate_per_s:g} req/s"
            )
        return found


def _apart(a: float, b: float) -> bool:
    """Whether two positive figures are over 20% apart."""
    return max(a, b) > 1.2 * min(a, b)


class WorkloadRecord(_Record):
    name: str
    source: str
    seed: int
    requests: int
    input_tokens: int
    output_tokens: int
    mean_input_tokens: float
    mean_output_tokens: float
    traffic: TrafficRecord | None = Field(
        default=None,
        description="its shape: lengths, prefix sharing, arrivals (none in profiles written "
        "before it was recorded, or from a replayed table, whose requests are not kept)",
    )


class TrialRecord(_Record):
    """One trial as a profile quotes it."""

    number: int
    status: Status
    reason: str | None = None
    knobs: dict[KnobName, Value]
    measurement: Measurement | None = None
    load_s: float | None = None
    prediction: Prediction | None = None


class TrialCounts(_Record):
    total: int
    by_status: dict[str, int]
    wall_s: float = Field(description="summed wall-clock time of all trials, loads included")


class PriorRecord(_Record):
    """The prior a study started from (`--prior`) and how far its predictions were from the
    study's measurements."""

    by: str
    starts: int = Field(description="configurations it put first in the search")
    error_pct: dict[str, float] = Field(
        description="median absolute percentage error of its predictions, per figure, over "
        "the trials measured"
    )


class Profile(_Record):
    """A tuned configuration for one engine, model and workload on one GPU model."""

    schema_version: Literal[1] = SCHEMA_VERSION
    tuner_version: str
    created_at: datetime
    gpu: GpuRecord
    host: HostRecord
    engine: EngineRecord
    model: ModelRecord
    workload: WorkloadRecord
    protocol: MeasurementProtocol
    seed: int
    optimizer: str
    objectives: list[str] = Field(
        default=["output_tokens_per_s"], description="what the study optimized, first to last"
    )
    constraints: list[str] = Field(
        default=[], description="the limits every configuration had to keep (metric<=value)"
    )
    best: TrialRecord = Field(
        description="the chosen configuration: the best on the first objective"
    )
    front: list[TrialRecord] = Field(
        default=[],
        description="with several objectives, the Pareto front: configurations no other "
        "feasible one beats in every objective, best on the first objective first",
    )
    baseline: TrialRecord | None
    speedup: float | None = Field(
        description="best over baseline on the first objective (median output tok/s by "
        "default), as a gain: inverted for an objective to minimize"
    )
    trials: TrialCounts
    run_dir: str | None = None
    replay: str | None = Field(
        default=None, description="the recorded table the study was replayed on, if it was"
    )
    predicted: str | None = Field(
        default=None,
        description="the performance model whose predictions it holds (`tuner plan`): "
        "nothing in it was measured",
    )
    prior: PriorRecord | None = Field(
        default=None, description="the prior the study started from, and its error"
    )

    @model_validator(mode="before")
    @classmethod
    def _one_objective(cls, data: Any) -> Any:
        return one_objective_to_many(data)

    def pick(self, which: str) -> Profile:
        """This profile with `best` replaced by a point of its front: `fastest` (most output
        tok/s), `most-efficient` (fewest J per output token) or an index into `front`;
        `best` keeps the chosen one. One line when there is no such point."""
        if which == "best":
            return self
        if not self.front:
            raise TunerError(
                f"{self.key} has no Pareto front (it was tuned for one objective); "
                "--pick takes best"
            )
        if which in ("fastest", "most-efficient"):
            name = "output_tokens_per_s" if which == "fastest" else "joules_per_token"
            found = metric(name)
            scored = [(p, v) for p in self.front if (v := found.of(p.measurement)) is not None]
            if not scored:
                raise TunerError(f"{self.key}: its front has no {found.label} figures")
            chosen = (max if found.maximize else min)(scored, key=lambda pv: pv[1])[0]
        else:
            try:
                chosen = self.front[int(which)]
            except (ValueError, IndexError):
                raise TunerError(
                    f"--pick takes best, fastest, most-efficient or an index 0.."
                    f"{len(self.front) - 1} of the front, not {which!r}"
                ) from None
        return self.model_copy(update={"best": chosen})

    def goal(self) -> Goal:
        """The objectives and constraints it was tuned for."""
        return goal(self.objectives, self.constraints)

    @property
    def shape(self) -> str:
        """The workload it was tuned on: name, requests x output tokens each."""
        return workload_shape(
            self.workload.name, self.workload.requests, self.workload.mean_output_tokens
        )

    @property
    def key(self) -> str:
        return profile_key(
            self.gpu.slug,
            self.engine.name,
            self.model.slug,
            tuned_for(self.shape, self.objectives, self.constraints)
            + ("--replay" if self.replay else "")
            + ("--predicted" if self.predicted else ""),
        )


def traffic_record(requests: Sequence[Request], request_rate: Any = None) -> TrafficRecord:
    """The shape of the traffic a study or a CI job sends (`tuner.specs.workloads.traffic`)."""
    return TrafficRecord.model_validate(
        traffic(requests, float(request_rate) if request_rate else None)
    )


def traffic_of(profile: Profile, workload: str) -> TrafficRecord:
    """The traffic shape of a workload (a reference as `--workload` takes it), tokenized with
    the profile's model, which must be here (a local folder or the Hugging Face cache)."""
    from tuner.models import resolve_model

    if profile.model.source in ("replay", "named"):
        raise TunerError(
            f"the profile's model {profile.model.ref} was not loaded ({profile.model.source}): "
            "there is no tokenizer to shape a workload with"
        )
    model = resolve_model(profile.model.ref)
    return traffic_record(build_requests(load_workload(workload), Tokenizer(model.path)))


def traffic_differences(profile: Profile, path: Path, workload: str) -> list[str]:
    """How a workload's traffic differs from what the profile was tuned on (empty: alike in
    shape); one line when the profile records no traffic shape."""
    tuned_on = profile.workload.traffic
    if tuned_on is None:
        raise TunerError(
            f"{path} records no traffic shape (written before tuner recorded it, or "
            "from a replay): tune it again to compare traffic"
        )
    return tuned_on.differences(traffic_of(profile, workload))


def workload_shape(name: str, requests: int, mean_output_tokens: float) -> str:
    """`humaneval-164x32`: a workload by name and shape (requests x output tokens each)."""
    return f"{name}-{requests}x{mean_output_tokens:g}"


def requests_shape(name: str, requests: Sequence[Request]) -> str:
    """`workload_shape` of the requests a study or a CI job runs."""
    return workload_shape(name, len(requests), summarize(requests)["mean_output_tokens"])


def tuned_for(shape: str, objectives: Sequence[str], constraints: Sequence[str]) -> str:
    """What a profile was tuned for, as a file name part: the workload's shape, then the
    objectives and constraints where they are not plain output tok/s."""
    parts = [shape]
    if list(objectives) != ["output_tokens_per_s"]:
        parts.append("+".join(objectives))
    if constraints:
        parts.append("_".join(c.replace("<=", "-le-").replace(">=", "-ge-") for c in constraints))
    return "--".join(parts)


def profile_key(gpu_slug: str, engine: str, model_slug: str, tuned: str) -> str:
    """Where a profile lives under a profiles folder, without `.json`: what it was tuned for
    (`tuned_for`) is part of it, so that profiles tuned for different workload shapes,
    objectives or limits never replace one another."""
    return f"{gpu_slug}/{engine}/{model_slug}--{tuned}"


def trial_record(result: TrialResult) -> TrialRecord:
    """A trial as a profile quotes it: the power and memory time series stay in the run's
    trials.jsonl (reports plot them), so that a profile stays a short file to read and diff."""
    m = result.measurement
    if m is not None:
        m = m.model_copy(update={"cold": _lean(m.cold), "runs": [_lean(r) for r in m.runs]})
    return TrialRecord(
        number=result.number,
        status=result.status,
        reason=result.reason,
        knobs=result.knobs,
        measurement=m,
        load_s=result.load_s,
        prediction=result.prediction,
    )


def _lean(run: Run) -> Run:
    if run.telemetry is None or run.telemetry.series is None:
        return run
    return run.model_copy(update={"telemetry": run.telemetry.model_copy(update={"series": None})})


def speedup(goal: Goal, baseline: TrialResult | None, best: TrialResult) -> float | None:
    """Best over baseline on the goal's first objective, as a gain (inverted for an objective
    to minimize); None without both figures."""
    base, top = (goal.value(baseline) if baseline else None), goal.value(best)
    if not (base and top):
        return None
    return round(top / base if goal.maximize else base / top, 4)


def trial_counts(results: Sequence[TrialResult]) -> TrialCounts:
    """How many trials, by status, and their summed wall-clock seconds."""
    counts = Counter(r.status for r in results)
    return TrialCounts(
        total=len(results),
        by_status={s: counts.get(s, 0) for s in STATUSES},
        wall_s=round(sum(r.wall_s for r in results), 3),
    )


#: The figures a profile gives its prior's error for, beside the goal's own.
PRIOR_FIGURES = ("output_tokens_per_s", "ttft_p99_ms", "itl_p99_ms")


def profile_path(root: Path, profile: Profile) -> Path:
    """`<root>/<gpu-slug>/<engine>/<model-slug>--<workload>.json`."""
    return root / f"{profile.key}.json"


def check_replace(profile: Profile, path: Path) -> None:
    """One line when writing `profile` to `path` would replace a profile it should not: a
    measured one by a replayed or predicted one."""
    if (profile.replay is None and profile.predicted is None) or not path.is_file():
        return
    try:
        held = read_profile(path)
    except TunerError:
        return  # unreadable: nothing worth keeping
    if held.replay is None and held.predicted is None:
        kind = "a replay" if profile.replay else "a prediction"
        raise TunerError(
            f"{path} holds a measured profile; {kind} does not replace it (write the "
            f"{'replayed' if profile.replay else 'predicted'} profile elsewhere: --profiles-dir)"
        )


def write_profile(profile: Profile, path: Path) -> Path:
    """Writes atomically: a reader sees the old file or the whole new one, never half, and a
    failed write (a full disk) leaves nothing behind."""
    check_replace(profile, path)
    try:
        write_atomic(path, profile.model_dump_json(indent=2) + "\n")
    except OSError as exc:
        raise TunerError(f"cannot write profile {path}: {os_error(exc)}") from None
    return path


def check_knob_types(profile: Profile, path: Path) -> None:
    """One line when a knob of the profile's best has a value of the wrong type for its
    engine's shipped catalogue (an edited profile): `batch_size: "lots"`."""
    from tuner.engines import ENGINES, catalogue_file, load_catalogue

    specs: dict[str, Any] = {}
    for name in (profile.engine.name, "server-load"):
        if (name in ENGINES or name == "server-load") and catalogue_file(name).is_file():
            specs = {**load_catalogue(name).knobs, **specs}
    for name, value in profile.best.knobs.items():
        wrong = specs[name].type_error(value) if name in specs else None
        if wrong is not None:
            raise TunerError(f"{path}: knob {name}: {wrong} (an edited profile?)")


def read_profile(path: Path) -> Profile:
    """Reads and checks a profile; any problem is one `TunerError` line."""
    try:
        data = json.loads(read_text(path, "profile"))
    except json.JSONDecodeError as exc:
        raise TunerError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise TunerError(f"{path}: not a profile (expected a JSON object)")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise TunerError(
            f"{path}: profile schema_version {version!r} is not one this tuner reads "
            f"({SCHEMA_VERSION})"
        )
    try:
        profile = Profile.model_validate(data)
    except ValidationError as exc:
        raise TunerError(f"{path}: not a valid profile ({describe(exc)})") from None
    check_knob_types(profile, path)
    return profile


def profiles_by_gpu(root: Path, engine: str, model_slug: str, tuned: str) -> dict[str, Path]:
    """The profiles of one engine, model and `tuned_for` under `root`, by GPU slug (measured
    ones: a replay's name ends in `--replay`)."""
    return {
        p.parent.parent.name: p for p in sorted(root.glob(f"*/{engine}/{model_slug}--{tuned}.json"))
    }


def find_profiles(root: Path) -> list[Path]:
    """Profile files under `root`, sorted."""
    return sorted(p for p in root.glob("*/*/*.json") if not p.name.startswith("."))


def json_schema() -> dict[str, Any]:
    """The JSON Schema of `Profile`, as shipped in `SCHEMA_FILE`."""
    schema = Profile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
