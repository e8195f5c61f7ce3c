"""`tuner ci`: hold a committed profile's throughput, and its limits, in continuous integration.

A small config file names the engine, model and workload, a bounded job (`bench`: measure the
profile's configuration once; `tune`: a short study) and a tolerance. The job runs as a study in
a run directory of its own (its report and trials are CI artifacts) under the goal the profile was
tuned for (its objectives and limits), its best figure is compared with the profile committed for
the GPU it ran on, and the verdict is written as a Markdown summary and a JUnit XML file. A
regression beyond the tolerance, or a held configuration that now breaks the profile's limits
(an SLO), is exit code 3; `update_profile` writes the new profile instead (a regression then
replaces the profile, exit 0). A run on another workload shape than the held profile's is bad
input (exit 2), not a regression: the figures would not compare.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuner.errors import TunerError
from tuner.execution.executor import NullObserver, Observer
from tuner.fmt import fmt_knobs, fmt_rate
from tuner.measure.measurement import MeasurementProtocol
from tuner.measure.objective import Goal
from tuner.profiles.profile import (
    Profile,
    profile_key,
    read_profile,
    requests_shape,
    traffic_record,
    tuned_for,
    write_profile,
)
from tuner.profiles.store import check_profile_engine
from tuner.specs.knobs import Value, describe
from tuner.specs.workloads import WorkloadSpec, load_workload
from tuner.study.prepare import Setup, prepare
from tuner.study.profile import build_profile
from tuner.study.rundir import StudySpec
from tuner.study.study import Study, StudyOutcome


class CiConfig(BaseModel):
    """The config file of `tuner ci` (YAML or JSON)."""

    model_config = ConfigDict(extra="forbid")
    schema_version: Literal[1] = 1
    engine: str = "hf"
    model: str
    workload: str = "humaneval"
    requests: int | None = Field(default=None, ge=1)
    output_tokens: int | None = Field(default=None, ge=1)
    job: Literal["bench", "tune"] = Field(
        default="bench",
        description="bench: measure the held profile's knobs; tune: a bounded study",
    )
    trials: int = Field(default=8, ge=1, description="tune: trial budget, baseline included")
    time_budget_s: float | None = Field(default=None, gt=0, description="tune: wall-clock budget")
    seed: int = 0
    tolerance: float = Field(
        default=0.10, ge=0, lt=1, description="fall below the profile by more than this: fail"
    )
    profile: str = Field(
        default="auto",
        description="the profile to hold: auto (<profiles_dir>/<this GPU>/<engine>/"
        "<model>--<workload>-<requests>x<tokens>[--<objectives>][--<limits>].json) or a path",
    )
    profiles_dir: Path = Path("profiles")
    update_profile: bool = Field(
        default=False, description="write the new profile (where none exists, or to replace it)"
    )
    objectives: list[str] = Field(
        default=["output_tokens_per_s"],
        description="what the profile was tuned for (finds it under profile: auto)",
    )
    constraints: list[str] = Field(
        default=[], description="the limits it was tuned within, as metric<=value"
    )
    set: dict[str, Value] = Field(default={}, description="knobs held at these values")
    protocol: MeasurementProtocol = MeasurementProtocol()
    engine_options: dict[str, Any] = {}
    run_dir: Path | None = Field(default=None, description="default: runs/ci-<time>")
    summary: Path = Path("tuner-ci.md")
    junit: Path = Path("tuner-ci.xml")


def load_config(path: Path) -> CiConfig:
    """Reads a CI config; an unknown key is named, any other problem is one line."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise TunerError(f"no CI config at {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TunerError(f"cannot read {path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise TunerError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TunerError(f"{path}: a CI config is a mapping of keys to values")
    unknown = sorted(set(data) - set(CiConfig.model_fields))
    if unknown:
        raise TunerError(
            f"{path}: unknown key {', '.join(map(repr, unknown))}; known keys: "
            f"{', '.join(CiConfig.model_fields)}"
        )
    try:
        return CiConfig.model_validate(data)
    except ValidationError as exc:
        raise TunerError(f"{path}: {describe(exc)}") from None


Verdict = Literal["pass", "regression", "slo breach", "failed", "new profile", "replaced"]


@dataclass
class CiOutcome:
    """What a CI run found."""

    verdict: Verdict
    held: Profile | None
    held_path: Path
    measured: float | None
    ratio: float | None
    tolerance: float
    study: StudyOutcome
    run_dir: Path
    written: Path | None
    gpu: str
    breaches: list[str] = field(default_factory=list)
    label: str = "output tok/s"  # what `measured` counts: the goal's first objective
    #: How this run's traffic differs from the held profile's (`TrafficRecord.differences`).
    traffic: list[str] = field(default_factory=list)

    @property
    def traffic_warning(self) -> str | None:
        """One line where the traffic differs from the profile's, else None."""
        if not self.traffic:
            return None
        return (
            f"{self.held_path} was tuned on other traffic ({'; '.join(self.traffic)}): its "
            "figures may not hold for this run's"
        )

    @property
    def held_rate(self) -> float | None:
        return _median(self.held)

    @property
    def exit_code(self) -> int:
        codes = {"pass": 0, "new profile": 0, "replaced": 0, "failed": 1, "regression": 3}
        return codes.get(self.verdict, 3)


def _median(profile: Profile | None) -> float | None:
    """The held profile's figure under the goal it was tuned for."""
    return profile.goal().of(profile.best.measurement) if profile else None


def _held(
    config: CiConfig, key_path: Path, gpu_slug: str, shape: str
) -> tuple[Path, Profile | None]:
    path = key_path if config.profile == "auto" else Path(config.profile)
    if not path.is_file():
        if config.update_profile:
            return path, None
        others = sorted(p.name for p in key_path.parent.glob(f"{key_path.name.split('--')[0]}--*"))
        raise TunerError(
            f"no profile to hold at {path} (this run: {shape}"
            + (f"; profiles of this model here: {', '.join(others)}" if others else "")
            + "); set update_profile: true (or pass --update) to write one from this run"
        )
    profile = read_profile(path)
    check_profile_engine(profile, path, key_path.parent.name)
    if profile.gpu.slug != gpu_slug:
        raise TunerError(
            f"{path} was measured on {profile.gpu.name}; this machine is {gpu_slug}: "
            "throughput on one GPU model does not hold another's"
        )
    if profile.shape != shape:
        raise TunerError(
            f"{path} was tuned on {profile.shape} and this run is {shape}: figures of "
            "different workload shapes do not compare; set requests and output_tokens to the "
            "profile's, or hold a profile of this shape"
        )
    return path, profile


def run_ci(config: CiConfig, observer: Observer | None = None) -> CiOutcome:
    """Runs the configured job, compares it with the held profile and writes the outputs."""
    workload = load_workload(
        config.workload, requests=config.requests, output_tokens=config.output_tokens
    )
    setup, held_path, held = _setup(config, workload)
    traffic = []
    if held is not None and held.workload.traffic is not None:
        rate = config.engine_options.get("request_rate")
        traffic = held.workload.traffic.differences(traffic_record(setup.requests, rate))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    spec = _spec(config, setup, workload, held)
    study = Study.create(spec, config.run_dir or Path("runs") / f"ci-{stamp}", setup)
    outcome = study.run(observer or NullObserver())
    verdict, measured, ratio, breaches = _judge(config, study.goal, outcome, held)
    written = None
    if outcome.best is not None and config.update_profile:
        written = write_profile(build_profile(study, outcome), held_path)
        if verdict == "regression":
            verdict = "replaced"  # asked to write the new profile instead of failing
    result = CiOutcome(
        verdict=verdict,
        held=held,
        held_path=held_path,
        measured=measured,
        ratio=ratio,
        tolerance=config.tolerance,
        study=outcome,
        run_dir=study.run_dir,
        written=written,
        gpu=setup.hardware.gpu_name,
        breaches=breaches,
        label=study.goal.label,
        traffic=traffic,
    )
    write_outputs(result, config)
    return result


def _setup(config: CiConfig, workload: WorkloadSpec) -> tuple[Setup, Path, Profile | None]:
    """The job's setup, and the profile it holds (with the profile's best knobs pinned, for a
    `bench` job)."""
    setup = prepare(config.engine, config.model, workload, options=config.engine_options)
    shape = requests_shape(setup.workload.slug, setup.requests)
    key = profile_key(
        setup.hardware.slug,
        setup.catalogue.engine,
        setup.model.slug,
        tuned_for(shape, config.objectives, config.constraints),
    )
    held_path, held = _held(config, config.profiles_dir / f"{key}.json", setup.hardware.slug, shape)
    pinned = dict(config.set)
    if config.job == "bench" and held is not None:
        pinned = {**held.best.knobs, **pinned}
    if pinned:
        setup = prepare(
            config.engine, config.model, workload, pinned, options=config.engine_options
        )
    return setup, held_path, held


def _spec(
    config: CiConfig, setup: Setup, workload: WorkloadSpec, held: Profile | None
) -> StudySpec:
    bench = config.job == "bench"
    return StudySpec(
        engine=config.engine,
        model=setup.model.ref,
        workload=workload,
        trials=1 if bench else config.trials,
        confirm=0 if bench else 2,
        time_budget_s=config.time_budget_s if config.job == "tune" else None,
        seed=config.seed,
        # Like with like: the goal the held profile was tuned for, its limits included.
        objectives=held.objectives if held else config.objectives,
        constraints=held.constraints if held else config.constraints,
        protocol=config.protocol,
        pinned=setup.space.pinned,
        engine_options=config.engine_options,
    )


def _judge(
    config: CiConfig, goal: Goal, outcome: StudyOutcome, held: Profile | None
) -> tuple[Verdict, float | None, float | None, list[str]]:
    """The verdict, the measured figure of the goal, its ratio to the held profile's, and the
    limits the run broke."""
    breaches: list[str] = []
    shown = outcome.best
    ran = [r for r in outcome.results if r.status == "ok" and r.measurement is not None]
    if outcome.best is None and ran:
        # It ran, and broke a limit: the best of what ran, and what it broke.
        closest = max(ran, key=lambda r: (goal.value(r) or 0.0) * (1 if goal.maximize else -1))
        breaches = goal.breaches(closest.measurement, robust=True)
        shown = closest if breaches else None
    measured = goal.value(shown) if shown else None
    held_rate = _median(held)
    ratio = None
    if measured is not None and held_rate:
        ratio = measured / held_rate if goal.maximize else held_rate / measured
    verdict: Verdict
    if breaches:
        verdict = "slo breach"
    elif measured is None:
        verdict = "failed"
    elif held is None:
        verdict = "new profile"
    else:
        verdict = "pass" if ratio is not None and ratio >= 1 - config.tolerance else "regression"
    return verdict, measured, ratio, breaches


# -- outputs -------------------------------------------------------------------------------------

HEADLINE = {
    "pass": "PASS",
    "regression": "REGRESSION",
    "failed": "FAILED: no configuration ran to the end",
    "new profile": "NEW PROFILE: nothing to hold yet",
    "replaced": "PROFILE REPLACED: below the tolerance, and asked to write the new profile",
    "slo breach": "SLO BREACH: the configuration no longer keeps the profile's limits",
}


def summary_markdown(o: CiOutcome) -> str:
    """The verdict and its figures, for a CI job's summary."""
    best = o.study.best
    lines = [f"## tuner ci: {HEADLINE[o.verdict]}", ""]
    if o.traffic_warning:
        lines += [f"> Warning: {o.traffic_warning}.", ""]
    if o.breaches:
        lines += [f"- {b}" for b in o.breaches] + [""]
    if o.ratio is not None:
        floor = 1 - o.tolerance
        lines += [
            f"Measured {fmt_rate(o.measured)} {o.label} against the profile's "
            f"{fmt_rate(o.held_rate)}: {o.ratio:.3f} of it (at least {floor:.2f} passes).",
            "",
        ]
    lines += ["| | held profile | this run |", "| --- | --- | --- |"]
    held = o.held
    m = best.measurement if best else None
    hm = held.best.measurement if held else None
    rows = [
        ("GPU", held.gpu.name if held else "-", o.gpu),
        (o.label, fmt_rate(o.held_rate), fmt_rate(o.measured)),
        (
            "cv",
            f"{hm.output_tokens_per_s.cv:.1%}" if hm else "-",
            f"{m.output_tokens_per_s.cv:.1%}" if m else "-",
        ),
        (
            "J / output token",
            f"{hm.energy.joules_per_output_token.median:.4g}" if hm and hm.energy else "-",
            f"{m.energy.joules_per_output_token.median:.4g}" if m and m.energy else "-",
        ),
        (
            "knobs",
            fmt_knobs(held.best.knobs) if held else "-",
            fmt_knobs(best.knobs) if best else "-",
        ),
        ("versions", _versions(held.engine.versions) if held else "-", _versions(o.study.versions)),
    ]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", f"Profile: `{o.held_path}`. Run directory: `{o.run_dir}`."]
    if o.written is not None:
        lines.append(f"Profile written: `{o.written}`.")
    failed = [r for r in o.study.results if r.status != "ok"]
    for r in failed:
        lines.append(f"Trial {r.number} {r.status}: {r.reason}")
    return "\n".join(lines) + "\n"


def _versions(versions: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items()) or "-"


def junit_xml(o: CiOutcome) -> str:
    """Two test cases: the measurement ran, and throughput held within the tolerance."""
    suite = ET.Element("testsuite", name="tuner ci", tests="2")
    ran = ET.SubElement(suite, "testcase", classname="tuner.ci", name="measurement")
    throughput = ET.SubElement(suite, "testcase", classname="tuner.ci", name="throughput")
    failures = skipped = 0
    if o.verdict == "failed":
        reasons = "; ".join(f"{r.status}: {r.reason}" for r in o.study.results)
        ET.SubElement(ran, "failure", message="no configuration ran to the end").text = reasons
        ET.SubElement(throughput, "skipped", message="nothing was measured")
        failures, skipped = 1, 1
    elif o.verdict == "new profile":
        ET.SubElement(throughput, "skipped", message=f"no profile to hold at {o.held_path}")
        skipped = 1
    elif o.verdict == "replaced":
        ET.SubElement(
            throughput,
            "skipped",
            message=f"{o.ratio:.3f} of the old profile; the new profile replaced it",
        )
        skipped = 1
    elif o.verdict == "slo breach":
        ET.SubElement(throughput, "failure", message="; ".join(o.breaches))
        failures = 1
    elif o.verdict == "regression":
        ET.SubElement(
            throughput,
            "failure",
            message=f"{fmt_rate(o.measured)} {o.label} is {o.ratio:.3f} of the profile's "
            f"{fmt_rate(o.held_rate)}, below {1 - o.tolerance:.2f}",
        )
        failures = 1
    suite.set("failures", str(failures))
    suite.set("skipped", str(skipped))
    suite.set("errors", "0")
    wall = o.study.gpu_s
    suite.set("time", f"{wall:.3f}")
    ET.indent(suite)
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_outputs(o: CiOutcome, config: CiConfig) -> None:
    """The summary (also appended to GitHub's step summary when there is one) and the JUnit."""
    summary = summary_markdown(o)
    try:
        for path, text in ((config.summary, summary), (config.junit, junit_xml(o))):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        step_summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if step_summary:
            with open(step_summary, "a") as f:
                f.write(summary)
    except OSError as exc:
        raise TunerError(f"cannot write the CI outputs: {exc}") from None


def outcome_json(o: CiOutcome) -> dict[str, Any]:
    """The verdict for scripts (`tuner ci --json`)."""
    return {
        "verdict": o.verdict,
        "exit_code": o.exit_code,
        "measured_output_tokens_per_s": o.measured,
        "profile_output_tokens_per_s": o.held_rate,
        "ratio": o.ratio,
        "tolerance": o.tolerance,
        "breaches": o.breaches,
        "traffic_differences": o.traffic,
        "profile": str(o.held_path),
        "profile_written": str(o.written) if o.written else None,
        "run_dir": str(o.run_dir),
    }
