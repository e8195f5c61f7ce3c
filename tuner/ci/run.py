"""A `tuner ci` run: its job measured as a study and judged against the held profile
(`run_ci`)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from tuner.ci.config import CiConfig
from tuner.ci.outcome import CiOutcome, Verdict, held_figure, write_outputs
from tuner.errors import TunerError
from tuner.execution.executor import NullObserver, Observer
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
from tuner.specs.workloads import WorkloadSpec, load_workload
from tuner.study.prepare import Setup, prepare
from tuner.study.profile import build_profile
from tuner.study.rundir import StudySpec
from tuner.study.study import Study, StudyOutcome


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
    held_rate = held_figure(held)
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
