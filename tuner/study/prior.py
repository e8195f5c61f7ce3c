"""A study's prior: the one `--prior` names, built for the study's setup, and its plan.

`tuner.predict` keeps what a prior is (`Prior`, `rank`, `Belief`, the measured prior and the
AIConfigurator adapter); this module reads a study's `Setup` to load one and rank its space.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tuner.errors import TunerError
from tuner.measure.objective import Goal
from tuner.measure.trial import PriorPlan
from tuner.predict.prior import PRIOR_STARTS, Prior, candidates, measured_prior, rank
from tuner.specs.workloads import summarize
from tuner.study.prepare import Setup


def load_prior(text: str, setup: Setup, say: Callable[[str], None]) -> Prior | None:
    """The prior `--prior aiconfigurator|PROFILE|TABLE` names, for a study's setup. Where
    AIConfigurator does not cover the engine, GPU or model: one line through `say`, and None
    (the study starts cold); without the extra installed, one line as an error."""
    if text != "aiconfigurator":
        return measured_prior(Path(text))
    try:
        return _aiconfigurator(setup)
    except TunerError as exc:
        if "needs AIConfigurator" in str(exc):
            raise
        say(f"--prior aiconfigurator: {exc}; the study starts cold")
        return None


def prior_plan(prior: Prior, setup: Setup, goal: Goal, say: Callable[[str], None]) -> PriorPlan:
    """The prior's ranking of the study's space and its best `PRIOR_STARTS`."""
    ranking = rank(prior, candidates(setup.space, prior.covers), goal)
    refused: dict[str, str] = getattr(prior, "refused", {})
    if refused:
        knobs, why = next(iter(refused.items()))
        say(
            f"--prior {prior.label}: {len(refused)} configuration(s) it cannot predict, "
            f"such as {knobs} ({why}); they get no prediction"
        )
    if not ranking.kept:
        say(f"--prior {prior.label}: no configuration is predicted to keep the goal")
    return ranking.plan(PRIOR_STARTS)


def workload_shape(setup: Setup) -> dict[str, float]:
    """A study's workload as a prior reads it: requests, and the mean prompt (`isl`) and
    output (`osl`) tokens."""
    replay = setup.replay
    shape = replay.workload_summary() if replay is not None else summarize(setup.requests)
    return {
        "requests": float(shape["requests"]),
        "isl": float(shape["mean_input_tokens"]),
        "osl": float(shape["mean_output_tokens"]),
    }


def _aiconfigurator(setup: Setup) -> Prior:
    from tuner.predict.aiconfigurator import Workload, prior_for

    replay = setup.replay
    precision = None
    if replay is not None:
        table = replay.table
        engine, gpu = table.engine, table.gpu.slug
        precision = table.versions.get("precision")
    else:
        engine = setup.catalogue.engine
        gpu = setup.hardware.gpus[0].name if setup.hardware.gpus else "none (a CPU)"
    shape = workload_shape(setup)
    workload = Workload(int(shape["requests"]), round(shape["isl"]), round(shape["osl"]))
    return prior_for(
        engine, setup.model.ref, gpu, workload, model_path=setup.model.path,
        precision=precision, fixed=setup.space.fixed,
    )  # fmt: skip
